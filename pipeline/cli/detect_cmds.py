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
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pipeline import cases, catalog, detect, safe_text, times
from pipeline.alerting.alert import Alert
from pipeline.callers import display_name
from pipeline.cli import alerts_cmds
from pipeline.cli.common import fail, lake_dir, make_console, severity_markup
from pipeline.settings import Settings

DEFAULT_WINDOW = dt.timedelta(hours=1)

QueriesOption = Annotated[
    Path | None, typer.Option("--queries", help="Query tree to use instead of the repository's queries/.")
]

_DETECT_HELP = (
    "Run the detections over [since, until) of the lake and print the findings.\n\n"
    "Each bucket is judged against its own lookback (e.g. the 7 days before it), so one run over a range finds "
    "what the scheduled runs over it find. Default window: the "
    "last hour ending now. Trusted accounts (cross-account and policy detections) come from --trusted-account "
    "or KEYTRAIL_TRUSTED_ACCOUNTS; when none are given, the accounts seen as recipientAccountId in the events "
    "read are trusted. --format json prints one alert per line (the alert contract); the exit code is 0 with "
    "or without findings. --publish then queues the findings in the lake's alert outbox and publishes the "
    "pending alerts to SNS (--topic-arn or KEYTRAIL_TOPIC_ARN; see `keytrail alerts`).\n\n"
    "Example: keytrail detect --lake ./lake --since 2024-05-08T02:00:00Z --until 2024-05-08T03:00:00Z "
    "--param kms_decrypt_volume_spike.min_events=500 --format json"
)


def _time(value: str | None, flag: str) -> dt.datetime | None:
    """An ISO-8601 flag value (UTC if no offset); ValueError naming the flag."""
    if value is None:
        return None
    try:
        return times.parse_timestamp(value)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def resolve_window(
    since: dt.datetime | None, until: dt.datetime | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """Fill in a missing end of the window: until defaults to now, since to one hour before until.
    ValueError when it is inverted or outside the span the lake can hold."""
    until = until or now
    if since is None:  # an hour before an --until outside the lake's span may not exist: check_window says why
        since = until - DEFAULT_WINDOW if times.in_range(until) else until
    times.check_window(since, until)
    return since, until


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


def _findings_table(alerts: Sequence[Alert], since: dt.datetime, until: dt.datetime) -> Table:
    table = Table(
        title=f"{len(alerts)} finding(s) in {since:%Y-%m-%d %H:%M}Z .. {until:%Y-%m-%d %H:%M}Z",
        box=box.SIMPLE_HEAD,
        caption="full ARNs, context and runbook: --format json",
    )
    table.add_column("severity", no_wrap=True)
    table.add_column("detection", no_wrap=True)
    table.add_column("principal -> resource", overflow="fold")
    table.add_column("first seen", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    for alert in alerts:
        table.add_row(
            severity_markup(alert.severity),
            safe_text.terminal(alert.detection_id),
            safe_text.terminal(f"{_short(alert.principal_arn)} -> {_short(alert.resource_arn)}"),
            f"{alert.first_seen:%m-%d %H:%M}",
            f"{alert.event_count:,}",
        )
    return table


def detect_command(
    lake: Annotated[Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Window start, ISO-8601 (UTC if no offset).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Window end (exclusive); default now.")] = None,
    detection: Annotated[
        list[str] | None, typer.Option("--detection", "-d", help="Run only this detection (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Override a param: ID.name=value (repeatable).")
    ] = None,
    trusted_account: Annotated[
        list[str] | None, typer.Option("--trusted-account", help="A trusted AWS account id (repeatable).")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table (rich) or json (one alert per line).")] = "table",
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
) -> None:
    now = dt.datetime.now(dt.UTC)  # the only clock read of a detect run
    settings = Settings.from_env()
    err = make_console(stderr=True)
    if output not in ("table", "json"):
        raise typer.BadParameter(f"{output!r}: use table or json", param_hint="--format")
    try:
        window = resolve_window(_time(since, "--since"), _time(until, "--until"), now)
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
        detections = catalog.load("detections", queries)  # once: for the run and for the re-alert policy
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
            )
    except (ValueError, catalog.CatalogError, duckdb.Error) as exc:
        raise fail(err, str(exc)) from None
    if output == "json":
        for alert in alerts:
            typer.echo(safe_text.json_text(alert.to_json()))
    elif alerts:
        make_console().print(_findings_table(alerts, *window))
    else:
        make_console().print(f"no findings for {window[0].isoformat()} .. {window[1].isoformat()}")
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
        )


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
) -> list[Alert]:
    """`detect.run_detections` with a task on `progress` that advances after each detection."""
    selected = detect.select_detections(detections, detection_ids)
    task = progress.add_task(label, total=len(selected))

    def advance(query: catalog.Query, found: int) -> None:
        progress.update(task, advance=1, description=f"{label}: {query.id}: {found} finding(s)")

    return detect.run_detections(
        lake,
        *window,
        queries=detections,
        detection_ids=[q.id for q in selected],
        param_overrides=overrides,
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
    table = Table(title=f"{total} case(s) of {len(selected)} query(ies)")
    for column in ("query", "case", "kind", "rows", "ms", "result"):
        table.add_column(column, justify="right" if column in ("rows", "ms") else "left", no_wrap=column == "query")
    for result in results:
        table.add_row(
            result.query_id,
            safe_text.markup(result.case_name),
            "firing" if result.firing else "quiet",
            str(result.rows),
            f"{result.seconds * 1000:.0f}",
            "[green]pass[/]" if result.passed else "[red]FAIL[/]",
        )
    console.print(table)
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
