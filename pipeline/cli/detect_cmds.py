"""`keytrail detect` (run the detection catalog over a window of the lake) and `keytrail test` (YAML cases).

The CLI is the entry point that reads the clock: the default window is the last hour ending now.
Exit codes: 0 = ran (with or without findings / all cases passed); 1 = error or a failing case; 2 = usage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from pipeline import cases, catalog, detect, findings, safe_text, times
from pipeline.alerting.alert import Alert
from pipeline.callers import display_name
from pipeline.cli import alerts_cmds, tables, tuning_cmds
from pipeline.cli.common import fail, lake_dir, make_console
from pipeline.engine import readable_partitions
from pipeline.names.resolve import account_label, resource_label
from pipeline.settings import Settings
from pipeline.tuning.model import EMPTY, Tuning

DEFAULT_WINDOW = dt.timedelta(hours=1)

QueriesOption = Annotated[
    Path | None, typer.Option("--queries", help="Query tree to use instead of the repository's queries/.")
]

_DETECT_HELP = (
    "Run the detections over [since, until) of the lake and print the findings.\n\n"
    "Each bucket is judged against its own lookback (e.g. the 7 days before it), so one run over a range finds "
    "what the scheduled runs over it find. Times are ISO or relative to now (now, -2d, -30m); default window: "
    "the last hour ending now (when it finds nothing, it says which days the lake holds). "
    "Trusted accounts (cross-account and policy detections) come from --trusted-account "
    "or KEYTRAIL_TRUSTED_ACCOUNTS; when none are given, the accounts seen as recipientAccountId in the events "
    "read are trusted. --format json prints one alert per line (the alert contract); the exit code is 0 with "
    "or without findings. --publish then queues the findings in the lake's alert outbox and publishes the "
    "pending alerts to SNS (--topic-arn or KEYTRAIL_TOPIC_ARN; see `keytrail alerts`). The tuning file "
    "(--tuning, KEYTRAIL_TUNING or ./keytrail.yaml; docs/tuning.md) sets params, severities and exceptions: an "
    "excepted finding is listed (JSON: with its `exception`) and recorded as `excepted`, never paged.\n\n"
    "Example: keytrail detect --lake ./lake --since 2024-05-08T02:00:00Z --until 2024-05-08T03:00:00Z "
    "--param kms_decrypt_volume_spike.min_events=500 --format json"
)


def resolve_window(since: str | None, until: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The window from --since/--until (ISO or relative to `now`): until defaults to now, since to one hour
    before until. ValueError naming the flag when a value is not a time, or the window is inverted or outside
    the span the lake can hold."""
    end = _time(until, "--until", now) or now
    start = _time(since, "--since", now)
    if start is None:  # an hour before an --until outside the lake's span may not exist: check_window says why
        start = end - DEFAULT_WINDOW if times.in_range(end) else end
    times.check_window(start, end)
    return start, end


def _time(value: str | None, flag: str, now: dt.datetime) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return times.parse_time(value, now)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def parse_param_overrides(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """`ID.name=value` items -> {ID: {name: value}} (values are coerced later, against the declared types)."""
    overrides: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        detection_id, dot, name = target.strip().partition(".")
        if not sep or not dot or not detection_id or not name:
            raise typer.BadParameter(
                f"{item!r}: use DETECTION_ID.param=value, e.g. kms_decrypt_volume_spike.min_events=500",
                param_hint="--param",
            )
        overrides.setdefault(detection_id, {})[name] = value
    return overrides


def _short(arn: str | None) -> str:
    """The name `alerts list` and SNS Subjects print too (pipeline/callers.py); JSON has the full ARN."""
    return display_name(arn) or "-"


def _subject(alert: Alert) -> str:
    """Who did what to which resource; a finding about no caller and no resource (trail_silence) names its
    scope instead: the account it is about, or the whole trail."""
    resource = resource_label(alert)
    if alert.principal_arn is None and not resource:
        if alert.context.get("scope") == "whole_trail":
            return "whole trail"
        return f"account {account_label(alert) or '-'}" + (f" in {alert.region}" if alert.region else "")
    return f"{_short(alert.principal_arn)} -> {resource or '-'}"


_FINDING_COLUMNS = (
    tables.severity_column(),
    tables.Column("detection", "text", priority=0),
    tables.Column("principal -> resource", "id", priority=1),
    tables.Column("first seen", "time", priority=1),
    tables.Column("events", "number", priority=3),
    tables.Column("alert", "id", priority=4),
)


def _findings_listing(alerts: Sequence[Alert], since: dt.datetime, until: dt.datetime) -> tables.Listing:
    rows = [
        tables.strings(
            [
                alert.severity,
                alert.detection_id,
                _subject(alert) + (f" (excepted: {alert.exception['id']})" if alert.exception else ""),
                times.display(alert.first_seen),
                f"{alert.event_count:,}",
                alert.alert_id,
            ]
        )
        for alert in alerts
    ]
    return tables.Listing(
        title=f"{len(alerts)} finding(s) in {times.display(since)} .. {times.display(until)}",
        columns=_FINDING_COLUMNS,
        rows=rows,
        records=[alert.to_dict() for alert in alerts],
        notes=("full ARNs, context and runbook: --format json, or keytrail alerts show ID once published",),
    )


def _nothing_found(lake: Path, since: dt.datetime, until: dt.datetime, defaulted: bool) -> str:
    """What an empty run looked at and, when the window was the default hour, a wider one to try."""
    said = f"no findings in {times.display(since)} .. {times.display(until)}"
    if not defaulted:
        return said
    days = readable_partitions(lake)
    if not days:
        return f"{said} (the default window: the last hour); the lake has no events yet"
    first, last = min(days), max(days)
    return (
        f"{said} (the default window: the last hour). The lake holds events from {first} to {last}: try "
        f"--since {first} --until {last + dt.timedelta(days=1)}, or --since -7d"
    )


def detect_command(
    lake: Annotated[Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help=f"Window start: {times.TIME_HELP}; default an hour before --until.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Window end (exclusive): ISO or relative; default now.")
    ] = None,
    detection: Annotated[
        list[str] | None, typer.Option("--detection", "-d", help="Run only this detection (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Override a param: ID.name=value (repeatable).")
    ] = None,
    trusted_account: Annotated[
        list[str] | None, typer.Option("--trusted-account", help="A trusted AWS account id (repeatable).")
    ] = None,
    output: tables.FormatOption = "table",
    full: tables.FullOption = False,
    queries: QueriesOption = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Queue findings in the lake's alert outbox and publish them to SNS.")
    ] = False,
    topic_arn: Annotated[
        str | None, typer.Option("--topic-arn", help="SNS topic for --publish (default: KEYTRAIL_TOPIC_ARN).")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="SNS endpoint for --publish, e.g. a moto server.")
    ] = None,
    tuning: tuning_cmds.TuningOption = None,
) -> None:
    now = dt.datetime.now(dt.UTC)  # the only clock read of a detect run
    settings = Settings.from_env()
    err = make_console(stderr=True)
    tables.check_format(output)
    try:
        window = resolve_window(since, until, now)
    except ValueError as exc:
        raise fail(err, str(exc), 2) from None
    overrides = parse_param_overrides(param or [])
    lake_path = lake_dir(lake, settings)
    if not lake_path.is_dir():
        raise fail(
            err,
            f"lake {lake_path} not found: ingest a trail first "
            f"(keytrail ingest SOURCE --lake {lake_path}) or pass --lake",
        )
    try:
        shipped = catalog.load("detections", queries)
        tuning_file = tuning_cmds.load_tuning(err, tuning, settings, shipped)
        # once: for the run and for the re-alert policy, as the tuning file sets them up
        detections = findings.tuned_catalog(shipped, tuning_file)
        with detections_progress(err) as progress:
            alerts = run_tracked(
                progress,
                "detections",
                lake_path,
                window,
                detections,
                detection_ids=detection or None,
                overrides=overrides,
                trusted=tuple(trusted_account or settings.trusted_accounts),
                tuning=tuning_file,
                now=now,
            )
    except (ValueError, catalog.CatalogError, duckdb.Error) as exc:
        raise fail(err, str(exc)) from None
    if alerts or output != "table":
        tables.emit(_findings_listing(alerts, *window), output, full=full)
    else:
        make_console().print(
            safe_text.terminal(_nothing_found(lake_path, *window, defaulted=since is None)), soft_wrap=True
        )
    if publish:
        alerts_cmds.queue_and_publish_with_progress(
            err,
            lake_path,
            alerts,
            detections,
            now=now,
            settings=settings,
            topic_arn=topic_arn,
            endpoint_url=endpoint_url,
            notices=tuning_cmds.expiry_notices(tuning_file, now),
        )
    else:
        tuning_cmds.print_expired(err, tuning_file, now)


def detections_progress(err: Console) -> Progress:
    """The bar `detect` and `backtest` draw on stderr while detections run (only on a terminal)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


def run_tracked(
    progress: Progress,
    label: str,
    lake: Path,
    window: tuple[dt.datetime, dt.datetime],
    detections: Sequence[catalog.Query],
    *,
    detection_ids: Sequence[str] | None,
    overrides: dict[str, dict[str, Any]],
    trusted: tuple[str, ...],
    tuning: Tuning = EMPTY,
    now: dt.datetime | None = None,
) -> list[Alert]:
    """`findings.find` (detections, the tuning's exceptions as of `now`, names) with a task on `progress` that
    advances after each detection."""
    selected = detect.select_detections(detections, detection_ids)
    task = progress.add_task(label, total=len(selected))

    def advance(query: catalog.Query, found: int) -> None:
        progress.update(task, advance=1, description=f"{label}: {query.id}: {found} finding(s)")

    return findings.find(
        lake,
        *window,
        detections=detections,
        tuning=tuning,
        now=now or window[1],
        detection_ids=[q.id for q in selected],
        overrides=overrides,
        trusted_accounts=trusted,
        progress=advance,
    )


def cases_command(
    query_id: Annotated[str | None, typer.Argument(help="Only this query's cases (default: every query).")] = None,
    queries: QueriesOption = None,
) -> None:
    """Run the YAML test cases of the queries and show a pass/fail table; exit 1 when a case fails.

    Example: keytrail test kms_decrypt_volume_spike
    """
    console = make_console()
    try:
        selected = catalog.load(None, queries)
    except catalog.CatalogError as exc:
        raise fail(console, str(exc)) from None
    if query_id is not None:
        selected = tuple(q for q in selected if q.id == query_id)
        if not selected:
            raise typer.BadParameter(f"no query {query_id!r}; see queries/README.md", param_hint="ID")
    total = sum(len(q.tests) for q in selected)
    results: list[cases.CaseResult] = []
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("cases", total=total)
        for query in selected:
            for case in query.tests:
                results.append(cases.run_case(query, case))
                progress.advance(task)
    columns = (
        tables.Column("query", "text", 0),
        tables.Column("case", "text", 1),
        tables.Column("kind", "tag", 2),
        tables.Column("rows", "number", 3),
        tables.Column("ms", "number", 4),
        tables.Column("result", "tag", 0, style=lambda v: "green" if v == "pass" else "red"),
    )
    rows = [
        [
            r.query_id,
            r.case_name,
            "firing" if r.firing else "quiet",
            str(r.rows),
            f"{r.seconds * 1000:.0f}",
            "pass" if r.passed else "FAIL",
        ]
        for r in results
    ]
    tables.emit(
        tables.Listing(f"{total} case(s) of {len(selected)} query(ies)", columns, rows), "table", console=console
    )
    failed = [r for r in results if not r.passed]
    for result in failed:
        console.print(safe_text.terminal(result.detail, style="red", multiline=True))
    if failed:
        console.print(f"[red]{len(failed)} of {total} case(s) failed[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `detect` and `test` to the app."""
    app.command("detect", help=_DETECT_HELP)(detect_command)
    app.command("test")(cases_command)
