"""`keytrail alerts list|publish|show`: the alert outbox in the lake, and publishing it to SNS."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pipeline import detect
from pipeline.alerting import outbox
from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import FORMATS, short_name
from pipeline.alerting.outbox import STATES, Outbox, OutboxEntry, OutboxError
from pipeline.cli.common import fail
from pipeline.settings import Settings
from pipeline.times import display

if TYPE_CHECKING:
    from pipeline.alerting.sns import PublishReport

_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}
_STATE_STYLE = {"pending": "yellow", "sent": "green", "suppressed": "dim"}

LakeOption = typer.Option(None, "--lake", help="The lake directory (default: KEYTRAIL_LAKE or ./keytrail-lake).")


def _lake(lake: Path | None, settings: Settings) -> Path:
    return lake if lake is not None else settings.lake


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
    console = Console()
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
    table = Table(title=f"alerts in {lake}" + (f" ({state})" if state else ""))
    # Narrow terminals: the SNS MessageId gives way, and long ids fold onto more lines instead of "kms_…".
    with_message = console.width >= 140
    columns = ("alert", "state", "severity", "detection", "principal", "first seen")
    for column in (*columns, "MessageId") if with_message else columns:
        table.add_column(column, no_wrap=column in ("alert", "state", "severity", "first seen"), overflow="fold")
    for entry in entries:
        alert = entry.alert
        message = (entry.message_id or "") + (" (summary)" if entry.delivery == "summary" else "")
        cells = [
            alert.alert_id[: 12 if with_message else 8],
            f"[{_STATE_STYLE[entry.state]}]{entry.state}[/]",
            f"[{_SEVERITY_STYLE[alert.severity]}]{alert.severity}[/]",
            alert.detection_id,
            short_name(alert.principal_arn) or "",
            display(alert.first_seen),
        ]
        if with_message:
            cells.append(message or (f"[red]{entry.last_error}[/red]" if entry.last_error else ""))
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
        None, "--storm-cap", min=1, help="Most messages per run; the rest go in one summary (default: 50)."
    ),
) -> None:
    """Publish the outbox's pending alerts to SNS and record each as sent with its MessageId.

    Example: keytrail alerts publish --lake ./demo-lake --topic-arn arn:aws:sns:us-east-1:123456789012:keytrail
    """
    console = Console(stderr=True)
    if fmt not in FORMATS:
        raise fail(console, f"unknown --format {fmt!r}: use {' or '.join(FORMATS)}")
    settings = Settings.from_env()
    _publish_and_report(console, _lake(lake, settings), settings, topic_arn, endpoint_url, fmt, storm_cap)


def enqueue_and_publish(
    console: Console,
    lake: Path,
    alerts: Sequence[Alert],
    *,
    now: dt.datetime,
    settings: Settings,
    topic_arn: str | None = None,
    endpoint_url: str | None = None,
) -> None:
    """`keytrail detect --publish`: findings -> the lake's outbox (dedup, suppression) -> SNS."""
    realert_after = detect.realert_policy(dt.timedelta(hours=settings.realert_hours))
    report = outbox.enqueue(lake, alerts, now=now, realert_after=realert_after)
    console.print(f"alert outbox: {report}")
    _publish_and_report(console, lake, settings, topic_arn, endpoint_url, "json", None)


def _publish_and_report(
    console: Console,
    lake: Path,
    settings: Settings,
    topic_arn: str | None,
    endpoint_url: str | None,
    fmt: str,
    storm_cap: int | None,
) -> None:
    report = publish_with_progress(
        console,
        lake,
        topic_arn=topic_arn or settings.topic_arn,
        endpoint_url=endpoint_url or settings.endpoint_url,
        region=settings.region,
        fmt=fmt,
        storm_cap=storm_cap or settings.storm_cap,
    )
    console.print(f"published from {lake}: {report}")
    for alert_id, error in sorted(report.failed.items()):
        console.print(f"  [red]{alert_id[:12]}[/red] {error}")
    if report.failed:
        console.print("the failed alerts stay pending: see `keytrail alerts show ID`, then publish again")
        raise typer.Exit(1)


def publish_with_progress(
    console: Console,
    lake: Path,
    *,
    topic_arn: str | None,
    endpoint_url: str | None,
    region: str,
    fmt: str = "json",
    storm_cap: int = 50,
) -> PublishReport:
    """Publish with a rich progress bar; exit with the error's advice when SNS refuses (also for `detect`)."""
    from pipeline import aws
    from pipeline.alerting.sns import PublishError, publish_pending

    if not topic_arn:
        raise fail(
            console,
            "no SNS topic: pass --topic-arn ARN or set KEYTRAIL_TOPIC_ARN, then run `keytrail alerts publish` "
            "(pending alerts wait in the outbox)",
        )
    client = aws.client("sns", endpoint_url=endpoint_url, region=region)
    columns = (TextColumn("publishing alerts"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("publish", total=None)
        try:
            return publish_pending(
                lake,
                client,
                topic_arn,
                now=dt.datetime.now(dt.UTC),
                storm_cap=storm_cap,
                fmt=fmt,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except PublishError as err:
            raise fail(console, str(err)) from None


def show(
    alert_id: str = typer.Argument(..., help="The alert id, or its first characters as `alerts list` prints them."),
    lake: Path | None = LakeOption,
) -> None:
    """Show one alert in full (the JSON sent to SNS) with its outbox state and history.

    Example: keytrail alerts show 3f9c2a1b7d40 --lake ./demo-lake
    """
    console = Console()
    lake = _lake(lake, Settings.from_env())
    try:
        with Outbox.open(lake, create=False) as box:
            entry = box.find(alert_id)
            history = box.history(entry.alert.alert_id)
    except OutboxError as err:
        raise fail(console, str(err)) from None
    console.print(JSON(json.dumps(entry.alert.to_dict())))
    console.print(JSON(json.dumps(_outbox_fields(entry))))
    table = Table(title="history")
    for column in ("at", "event", "detail"):
        table.add_column(column)
    for event in history:
        table.add_row(display(event.at), event.event, event.detail or "")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `keytrail alerts ...` to the app."""
    alerts = typer.Typer(
        name="alerts",
        help="The alert outbox: list alerts, publish pending ones to SNS, show one in full.\n\n"
        "Example: keytrail alerts list --lake ./demo-lake",
        no_args_is_help=True,
    )
    alerts.command("list")(list_alerts)
    alerts.command("publish")(publish)
    alerts.command("show")(show)
    app.add_typer(alerts, name="alerts")
