"""`keytrail alerts list|publish|show|retry|repair`: the alert outbox in the lake, and publishing it to SNS."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from pipeline import runbook, safe_text
from pipeline.alerting import outbox_store
from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import FORMATS, short_name
from pipeline.alerting.outbox import STATES, Outbox, OutboxEntry, OutboxError
from pipeline.alerting.publish import queue_and_publish
from pipeline.alerting.sns import PublishError, PublishReport
from pipeline.catalog import Query
from pipeline.cli import tables
from pipeline.cli.common import SEVERITY_STYLE, command_prefix, fail, lake_dir, make_console
from pipeline.names.resolve import resource_label
from pipeline.settings import Settings
from pipeline.times import display, iso

_STATE_STYLE = {"pending": "yellow", "sent": "green", "suppressed": "dim", "failed": "red", "excepted": "blue"}

LakeOption = typer.Option(None, "--lake", help="The lake directory (default: KEYTRAIL_LAKE or ./keytrail-lake).")


def _lake(lake: Path | None, settings: Settings) -> Path:
    return lake_dir(lake, settings)


def _outbox_fields(entry: OutboxEntry) -> dict[str, object]:
    return {
        "state": entry.state,
        "enqueued_at": display(entry.enqueued_at),
        "sent_at": display(entry.sent_at) or None,
        "message_id": entry.message_id,
        "delivery": entry.delivery,
        "summary_id": entry.summary_id,
        "suppressed_by": entry.suppressed_by,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
    }


def list_alerts(
    lake: Path | None = LakeOption,
    state: str | None = typer.Option(None, "--state", help=f"Only alerts in this state: {'|'.join(STATES)}."),
    output: tables.FormatOption = "table",
    full: tables.FullOption = False,
    show_all: bool = typer.Option(False, "--all", help="Include excepted alerts (a tuning exception covered them)."),
) -> None:
    """List the alerts in the lake's outbox with their state, most severe first (excepted ones with --all).
    Principals and resources show by name; --format json has the full ARNs (one alert per line, with its outbox
    state).

    Example: keytrail alerts list --lake ./demo-lake --state pending
    """
    console = make_console()
    tables.check_format(output)
    lake = _lake(lake, Settings.from_env())
    try:
        with Outbox.open(lake, create=False) as box:
            entries = box.entries(state)
    except OutboxError as err:
        raise fail(console, str(err)) from None
    hidden = 0 if show_all or state else sum(1 for e in entries if e.state == "excepted")
    entries = [e for e in entries if show_all or state or e.state != "excepted"]
    tables.emit(_alerts_listing(lake, state, entries), output, full=full, console=console)
    if hidden and output == "table":
        console.print(f"{hidden} excepted alert(s) not shown (a tuning exception covered them): --all lists them")


_ALERT_COLUMNS = (
    tables.Column("alert", "id", priority=0),
    tables.Column("state", "tag", priority=0, style=lambda v: _STATE_STYLE.get(v, "")),
    tables.severity_column(),
    tables.Column("detection", "text", priority=1),
    tables.Column("principal", "id", priority=1),
    tables.Column("resource", "id", priority=2),
    tables.Column("first seen", "time", priority=2),
    tables.Column("MessageId / error", "id", priority=5),
)


def _alerts_listing(lake: Path, state: str | None, entries: Sequence[OutboxEntry]) -> tables.Listing:
    rows = []
    for entry in entries:
        alert = entry.alert
        message = (entry.message_id or "") + (" (summary)" if entry.delivery == "summary" else "")
        rows.append(
            tables.strings(
                [
                    alert.alert_id,
                    entry.state,
                    alert.severity,
                    alert.detection_id,
                    short_name(alert.principal_arn),
                    resource_label(alert),
                    display(alert.first_seen),
                    message or entry.last_error,
                ]
            )
        )
    return tables.Listing(
        title=f"alerts in {lake}" + (f" ({state})" if state else ""),
        columns=_ALERT_COLUMNS,
        rows=rows,
        records=[{**entry.alert.to_dict(), "outbox": _outbox_fields(entry)} for entry in entries],
        empty="no alerts" + (f" in state {state}" if state else "") + " yet",
    )


def publish(
    lake: Path | None = LakeOption,
    topic_arn: str | None = typer.Option(None, "--topic-arn", help="SNS topic (default: KEYTRAIL_TOPIC_ARN)."),
    endpoint_url: str | None = typer.Option(
        None, "--endpoint-url", help="SNS endpoint, e.g. a moto server (default: KEYTRAIL_ENDPOINT_URL)."
    ),
    fmt: str = typer.Option("json", "--format", help="Message body: json (the alert) or ocsf (Detection Finding)."),
    storm_cap: int | None = typer.Option(
        None,
        "--storm-cap",
        min=1,
        help="Most messages per run; the rest go in one summary "
        f"(default: KEYTRAIL_STORM_CAP, else {Settings.storm_cap}).",
    ),
) -> None:
    """Publish the outbox's pending alerts to SNS and record each as sent with its MessageId.

    Example: keytrail alerts publish --lake ./demo-lake --topic-arn arn:aws:sns:us-east-1:123456789012:keytrail
    """
    console = make_console(stderr=True)
    if fmt not in FORMATS:
        raise fail(console, f"unknown --format {fmt!r}: use {' or '.join(FORMATS)}")
    settings = Settings.from_env()
    queue_and_publish_with_progress(
        console,
        _lake(lake, settings),
        (),
        (),
        now=dt.datetime.now(dt.UTC),
        settings=settings,
        topic_arn=topic_arn,
        endpoint_url=endpoint_url,
        fmt=fmt,
        storm_cap=storm_cap,
        show_queued=False,
    )


def queue_and_publish_with_progress(
    console: Console,
    lake: Path,
    alerts: Sequence[Alert],
    detections: Sequence[Query],
    *,
    now: dt.datetime,
    settings: Settings,
    topic_arn: str | None,
    endpoint_url: str | None,
    fmt: str = "json",
    storm_cap: int | None = None,
    show_queued: bool = True,
    notices: dict[str, str] | None = None,
) -> None:
    """`queue_and_publish` with a rich progress bar: `detect --publish`, and `alerts publish` (no alerts to queue,
    `show_queued=False`). Exits 1 with what to do when the alerts could not be queued (the outbox is damaged,
    read-only or on a full disk: `detect` printed them before), nothing could be published (no topic, SNS
    refused), or an alert failed in this run."""
    columns = (TextColumn("publishing alerts"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("publish", total=None)
        try:
            report = queue_and_publish(
                lake,
                alerts,
                detections,
                now=now,
                settings=settings,
                topic_arn=topic_arn,
                endpoint_url=endpoint_url,
                storm_cap=storm_cap,
                fmt=fmt,
                notices=notices,
                on_queued=(lambda queued: console.print(f"alert outbox: {queued}")) if show_queued else None,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except PublishError as err:
            raise fail(console, str(err)) from None
        except OutboxError as err:  # before anything was queued or sent
            lost = f"the {len(alerts)} finding(s) printed above were not queued: " if alerts else ""
            raise fail(console, lost + str(err)) from None
    for notice in report.notices:  # said once, by the first run that saw it
        console.print(f"[yellow]note:[/yellow] {safe_text.markup(notice)}")
    if report.not_published:
        raise fail(console, report.not_published)
    assert report.published is not None
    console.print(f"published from {safe_text.markup(lake)}: {report.published}")
    if _print_failures(console, report.published):
        raise typer.Exit(1)


def _print_failures(console: Console, report: PublishReport) -> bool:
    """Say what failed in this publish run and what to do about it; True when anything did."""
    for alert_id, error in sorted(report.failed.items()):
        console.print(f"  [red]{safe_text.markup(alert_id[:12])}[/red] {safe_text.markup(error)}")
    if report.failed:
        console.print(
            "SNS did not take these in this run; they stay pending and the next publish tries again "
            "(`keytrail alerts show ID` says why)"
        )
    for alert_id, reason in sorted(report.undeliverable.items()):
        console.print(f"  [red]{safe_text.markup(alert_id[:12])}[/red] {safe_text.markup(reason)}")
    if report.undeliverable:
        console.print(
            f"{len(report.undeliverable)} alert(s) could not be delivered and are now failed (they block nothing): "
            "`keytrail alerts show ID` says why; once the cause is fixed, `keytrail alerts retry ID` queues one again"
        )
    if report.released:
        console.print(
            f"{len(report.released)} alert(s) they had suppressed are pending again: "
            "`keytrail alerts publish` sends them"
        )
    return bool(report.failed or report.undeliverable)


def show(
    alert_id: str = typer.Argument(..., help="The alert id, or its first characters as `alerts list` prints them."),
    lake: Path | None = LakeOption,
    output: tables.FormatOption = "table",
) -> None:
    """Show one alert in full (every field of the JSON sent to SNS, whole) with its outbox state, runbook and
    history. --format json prints it as one JSON object (the alert, `outbox` and `history`), for scripts.

    Example: keytrail alerts show 3f9c2a1b7d40 --lake ./demo-lake
    """
    console = make_console()
    tables.check_format(output)
    lake = _lake(lake, Settings.from_env())
    try:
        with Outbox.open(lake, create=False) as box:
            entry = box.find(alert_id)
            history = box.history(entry.alert.alert_id)
    except OutboxError as err:
        raise fail(console, str(err)) from None
    document = {
        **entry.alert.to_dict(),
        "outbox": _outbox_fields(entry),
        "history": [{"at": iso(e.at), "event": e.event, "detail": e.detail} for e in history],
    }
    if output == "json":
        tables.emit(tables.Listing("", (), (), records=[document]), "json", console=console)
        return
    fields = _alert_fields(entry)
    if output == "csv":
        listing = tables.Listing("", (tables.Column("field"), tables.Column("value")), list(fields.items()))
        tables.emit(listing, "csv", console=console)
        return
    tables.print_fields(console, f"alert {entry.alert.alert_id}", fields, styles={"severity": SEVERITY_STYLE})
    console.print(Text("runbook", style="bold"))
    steps = runbook.as_text(entry.alert.runbook or "-", entry.alert, prefix=command_prefix(), lake=lake)
    console.print(safe_text.terminal(steps, multiline=True), soft_wrap=True)
    rows = [tables.strings([display(e.at), e.event, e.detail]) for e in history]
    columns = (tables.Column("at", "time", 0), tables.Column("event", "tag", 0), tables.Column("detail", "text", 1))
    tables.emit(tables.Listing("history", columns, rows, empty="no history"), "table", console=console)


def _alert_fields(entry: OutboxEntry) -> dict[str, str]:
    """Every field of an alert and its outbox state as text: times for people, context and lists as JSON
    (escaped, so a hidden character in a trail value shows as `\\uXXXX`)."""
    fields: dict[str, str] = {}
    data = entry.alert.to_dict()
    data.pop("runbook", None)
    for name, value in {**data, **_outbox_fields(entry)}.items():
        if name in ("first_seen", "last_seen"):
            value = display(getattr(entry.alert, name))
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=True)
        fields[name] = "" if value is None else str(value)
    return fields


def retry(
    alert_ids: Annotated[list[str] | None, typer.Argument(help="Failed alerts' ids (or first characters).")] = None,
    every: bool = typer.Option(False, "--all", help="Every failed alert."),
    lake: Path | None = LakeOption,
) -> None:
    """Put failed alerts back in the queue (pending), once what made SNS refuse them is fixed.

    Example: keytrail alerts retry 3f9c2a1b7d40 --lake ./demo-lake
    """
    console = make_console()
    if not alert_ids and not every:
        raise fail(console, "name the failed alerts to retry (`keytrail alerts list --state failed`), or --all", 2)
    lake = _lake(lake, Settings.from_env())
    now = dt.datetime.now(dt.UTC)
    try:
        with Outbox.open(lake, create=False) as box:
            wanted = [e.alert.alert_id for e in box.entries("failed")] if every else list(alert_ids or ())
            retried = [box.retry(alert_id, now=now) for alert_id in wanted]
    except OutboxError as err:
        raise fail(console, str(err)) from None
    for entry in retried:
        console.print(f"{entry.alert.alert_id[:12]} is pending again")
    console.print(f"{len(retried)} alert(s) queued again: `keytrail alerts publish` sends them")


def repair(lake: Path | None = LakeOption) -> None:
    """Check the lake's alert outbox; if it is damaged, move it aside (renamed with the time) and start a fresh one.

    Example: keytrail alerts repair --lake ./demo-lake
    """
    console = make_console()
    lake = _lake(lake, Settings.from_env())
    try:
        done = outbox_store.repair(lake, now=dt.datetime.now(dt.UTC))
    except OutboxError as err:
        raise fail(console, str(err)) from None
    path = safe_text.markup(done.path)
    if not done.exists:
        console.print(f"no alert outbox at {path}: nothing to repair")
        return
    if not done.moved:
        console.print(f"the alert outbox {path} is healthy: left as it is")
        return
    console.print(f"the alert outbox {path} was damaged ({safe_text.markup(done.problem)})")
    for source, target in done.moved:
        console.print(f"moved {safe_text.markup(source)} aside to {safe_text.markup(target)}")
    console.print(
        f"created a fresh outbox at {path}. The alerts the damaged one held are not in it: run `keytrail detect "
        f"--lake {safe_text.markup(lake)} --since ... --publish` over the affected time to queue them again "
        "(alerts already sent will be sent again; subscribers deduplicate on alert_id)"
    )


def register(app: typer.Typer) -> None:
    """Add `keytrail alerts ...` to the app."""
    alerts = typer.Typer(
        name="alerts",
        help="The alert outbox: list alerts, publish pending ones to SNS, show one in full, retry failed ones, "
        "repair a damaged outbox.\n\n"
        "Example: keytrail alerts list --lake ./demo-lake",
        no_args_is_help=True,
    )
    alerts.command("list")(list_alerts)
    alerts.command("publish")(publish)
    alerts.command("show")(show)
    alerts.command("retry")(retry)
    alerts.command("repair")(repair)
    app.add_typer(alerts, name="alerts")
