"""`keytrail alerts list|publish|show|retry|repair`: the alert outbox in the lake, and publishing it to SNS."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.json import JSON
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pipeline import safe_text
from pipeline.alerting import outbox_store
from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import FORMATS, short_name
from pipeline.alerting.outbox import STATES, Outbox, OutboxEntry, OutboxError
from pipeline.alerting.publish import queue_and_publish
from pipeline.alerting.sns import PublishError, PublishReport
from pipeline.catalog import Query
from pipeline.cli.common import fail, lake_dir, make_console, severity_markup
from pipeline.settings import Settings
from pipeline.times import display

_STATE_STYLE = {"pending": "yellow", "sent": "green", "suppressed": "dim", "failed": "red"}

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
    output: str = typer.Option("table", "--format", help="table (rich) or json (one object per line)."),
) -> None:
    """List the alerts in the lake's outbox with their state, most severe first.

    Example: keytrail alerts list --lake ./demo-lake --state pending
    """
    console = make_console()
    if output not in ("table", "json"):
        raise fail(console, f"unknown --format {output!r}: use table or json")
    lake = _lake(lake, Settings.from_env())
    try:
        with Outbox.open(lake, create=False) as box:
            entries = box.entries(state)
    except OutboxError as err:
        raise fail(console, str(err)) from None
    if output == "json":
        for entry in entries:
            typer.echo(json.dumps({**entry.alert.to_dict(), "outbox": _outbox_fields(entry)}))
        return
    table = Table(title=f"alerts in {safe_text.markup(lake)}" + (f" ({state})" if state else ""))
    # Narrow terminals: the SNS MessageId gives way, and long ids fold onto more lines instead of "kms_…".
    with_message = console.width >= 140
    columns = ("alert", "state", "severity", "detection", "principal", "first seen")
    for column in (*columns, "MessageId") if with_message else columns:
        table.add_column(column, no_wrap=column in ("alert", "state", "severity", "first seen"), overflow="fold")
    for entry in entries:
        alert = entry.alert
        message = (entry.message_id or "") + (" (summary)" if entry.delivery == "summary" else "")
        cells: list[RenderableType] = [
            alert.alert_id[: 12 if with_message else 8],
            f"[{_STATE_STYLE[entry.state]}]{entry.state}[/]",
            severity_markup(alert.severity),
            safe_text.terminal(alert.detection_id),
            safe_text.terminal(short_name(alert.principal_arn) or ""),
            display(alert.first_seen),
        ]
        if with_message:
            cells.append(
                safe_text.markup(message)
                or (f"[red]{safe_text.markup(entry.last_error)}[/red]" if entry.last_error else "")
            )
        table.add_row(*cells)
    console.print(table)
    if not entries:
        console.print("no alerts" + (f" in state {state}" if state else "") + " yet")


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
                on_queued=(lambda queued: console.print(f"alert outbox: {queued}")) if show_queued else None,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except PublishError as err:
            raise fail(console, str(err)) from None
        except OutboxError as err:  # before anything was queued or sent
            lost = f"the {len(alerts)} finding(s) printed above were not queued: " if alerts else ""
            raise fail(console, lost + str(err)) from None
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
) -> None:
    """Show one alert in full (the JSON sent to SNS) with its outbox state and history.

    Example: keytrail alerts show 3f9c2a1b7d40 --lake ./demo-lake
    """
    console = make_console()
    lake = _lake(lake, Settings.from_env())
    try:
        with Outbox.open(lake, create=False) as box:
            entry = box.find(alert_id)
            history = box.history(entry.alert.alert_id)
    except OutboxError as err:
        raise fail(console, str(err)) from None
    # ensure_ascii: JSON escapes for what a trail may hold (U+202E, U+2028, ...); rich's default prints them raw.
    console.print(JSON(json.dumps(entry.alert.to_dict()), ensure_ascii=True))
    console.print(JSON(json.dumps(_outbox_fields(entry)), ensure_ascii=True))
    table = Table(title="history")
    for column in ("at", "event", "detail"):
        table.add_column(column)
    for event in history:
        table.add_row(display(event.at), safe_text.terminal(event.event), safe_text.terminal(event.detail or ""))
    console.print(table)


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
