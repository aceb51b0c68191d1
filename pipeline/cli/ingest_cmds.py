"""`keytrail ingest` and `keytrail compact`.

Exit codes of `keytrail ingest`: 0 = clean run; 3 = the run completed but something was quarantined (see the
summary and `<lake>/quarantine/`); 1 = the run failed (nothing half-written: rerun after fixing the cause);
2 = bad command-line usage.

Everything printed that came from a trail (paths, keys, reasons quoting record values) goes through
`pipeline.safe_text`, on consoles made with `emoji=False`: a key like `[/bold]:secret:` prints as written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from pipeline import aws, lake, safe_text, times
from pipeline.cli import ingest_queue_cmds as queue_cmds
from pipeline.cli import tables
from pipeline.cli.common import fail, lake_dir, make_console, parse_date
from pipeline.ingest import IngestReport, ingest
from pipeline.ingest_failures import RunFault
from pipeline.queue_report import DrainOptions
from pipeline.s3 import SourceError
from pipeline.settings import Settings

EXIT_QUARANTINED = 3

LakeOption = Annotated[Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")]

_INGEST_HELP = (
    "Read CloudTrail logs from S3 or a folder into the Parquet lake (KMS + Secrets Manager events).\n\n"
    "SOURCE is s3://bucket\\[/prefix] (credentials from the standard AWS chain; endpoint from --endpoint-url or "
    "AWS_ENDPOINT_URL) or a local folder with the CloudTrail layout "
    "(AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/, organization trails too). Runs are incremental: "
    "objects already in the lake's ledger are skipped. --since/--until pick whole days of files: "
    "[since, until), ISO or relative to now (-2d), --until exclusive as in every command.\n\n"
    "Exit codes: 0 clean, 3 something was quarantined (see the summary and <lake>/quarantine/), 1 error, 2 usage."
    "\n\nExample: keytrail ingest s3://my-trail-bucket/cloudtrail --lake ./lake --since 2024-05-01 --until 2024-05-07"
    f"{queue_cmds.QUEUE_HELP}"
)


def _days(since: str | None, until: str | None, now: dt.datetime) -> tuple[dt.date | None, dt.date | None]:
    """The days [since, until) touches: CloudTrail files are listed per day, so ingest reads whole days. --until
    is exclusive as everywhere (`--until 2024-05-07` stops after May 6); either end may be relative (-2d)."""
    bounds: list[dt.datetime | None] = []
    for flag, value in (("--since", since), ("--until", until)):
        try:
            bounds.append(None if value is None else times.parse_time(value, now))
        except ValueError as exc:
            raise typer.BadParameter(f"{exc} (a day YYYY-MM-DD, a time, or relative: -2d)", param_hint=flag) from None
    for flag, bound in zip(("--since", "--until"), bounds, strict=True):
        if bound is not None and not times.in_range(bound):  # before the exclusive end becomes a last day
            times.check_days(bound.date() if flag == "--since" else None, bound.date() if flag == "--until" else None)
    start, end = bounds
    return (
        start.date() if start else None,
        (end - dt.timedelta(microseconds=1)).date() if end else None,
    )


def _summary(report: IngestReport, lake_path: Path) -> Table:
    table = Table(title=f"ingest into {safe_text.markup(lake_path)}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, Any]] = [
        ("objects listed", report.objects_listed),
        ("objects read", report.objects_read),
        ("objects skipped (already ingested)", report.objects_skipped),
        ("objects skipped (digest/insight)", report.objects_skipped_digest),
        ("objects quarantined", report.objects_quarantined),
        ("events seen", report.events_seen),
        ("events kept", report.events_kept),
        ("events duplicate", report.events_duplicate),
        ("events rejected (quarantined)", report.events_rejected),
        ("files written", report.files_written),
        ("seconds", f"{report.seconds:.2f}"),
        ("events/s", f"{report.events_per_second:,.0f}"),
    ]
    for name, value in rows:
        style = "red" if name.endswith("quarantined") or name.startswith("events rejected") else None
        table.add_row(name, f"{value:,}" if isinstance(value, int) else value, style=style if value else None)
    return table


def _quarantine_listing(report: IngestReport) -> tables.Listing:
    """What was quarantined: the source object, why, and where it is kept (paths whole with --full / piped)."""
    rows = [[entry.source, entry.reason, str(entry.path)] for entry in report.quarantine[:20]]
    more = len(report.quarantine) - 20
    columns = (tables.Column("source", "id", 0), tables.Column("reason", "text", 1), tables.Column("kept at", "id", 2))
    notes = (f"... and {more} more in the lake's quarantine/",) if more > 0 else ()
    return tables.Listing("quarantined (kept for inspection)", columns, rows, notes=notes)


def _print_ingest(report: IngestReport, lake_path: Path, out: Console) -> None:
    """A run's summary and what it quarantined (a listing run's tables; queue runs print them too)."""
    out.print(_summary(report, lake_path))
    if report.quarantine:
        tables.emit(_quarantine_listing(report), "table", console=out)


def _aws_error(exc: Exception, source: str) -> str:
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, then rerun"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return f"{source}: no such bucket: check the bucket name (and --endpoint-url for a local endpoint)"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"{source}: access denied ({code}): the credentials need s3:ListBucket and s3:GetObject"
        return f"{source}: S3 error {code}: {exc}; rerun once the cause is fixed (the run committed nothing new)"
    return f"{source}: cannot reach S3 ({exc}); check --endpoint-url / network, then rerun"


def ingest_command(
    source: Annotated[
        str | None, typer.Argument(help="s3://bucket\\[/prefix], a folder holding AWSLogs/..., or sqs://QUEUE")
    ] = None,
    lake_path: LakeOption = None,
    since: Annotated[str | None, typer.Option("--since", help=f"Read from this day: {times.TIME_HELP}.")] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Read up to this time (exclusive: 2024-05-07 ends with May 6).")
    ] = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only this account id (repeatable).")] = None,
    region: Annotated[list[str] | None, typer.Option("--region", help="Only this region (repeatable).")] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3 endpoint, e.g. a local moto server.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Reader processes (default: KEYTRAIL_WORKERS or CPUs).")
    ] = None,
    queue: queue_cmds.QueueOption = None,
    batch_messages: queue_cmds.BatchOption = DrainOptions.batch_messages,
    wait_seconds: queue_cmds.WaitOption = DrainOptions.wait_seconds,
    visibility_timeout: queue_cmds.VisibilityOption = DrainOptions.visibility_seconds,
    retry_delay: queue_cmds.RetryOption = DrainOptions.retry_delay_seconds,
    max_receives: queue_cmds.MaxReceivesOption = DrainOptions.max_receives,
    max_messages: queue_cmds.MaxMessagesOption = None,
    follow: queue_cmds.FollowOption = False,
) -> None:
    settings = Settings.from_env()
    console = make_console(stderr=True)
    if queue is not None or (source or "").startswith("sqs://"):
        if (queue is not None and source is not None) or since or until or account or region:
            raise fail(console, "a queue run takes no SOURCE, --since, --until, --account or --region", 2)
        options = DrainOptions(
            batch_messages, wait_seconds, visibility_timeout, retry_delay, max_receives, max_messages, follow
        )
        into = lake_dir(lake_path, settings)
        queue_cmds.run_queue_ingest(
            queue or source or "",
            into,
            settings=settings,
            endpoint_url=endpoint_url,
            workers=workers or settings.workers,
            options=options,
            print_ingest=lambda report, out: _print_ingest(report, into, out),
        )
        return
    if source is None:
        raise fail(console, "give a SOURCE (s3://bucket[/prefix], a folder, or sqs://QUEUE) or --queue QUEUE", 2)
    try:
        start, end = _days(since, until, dt.datetime.now(dt.UTC))  # the clock: relative days resolve against it
        times.check_days(start, end)
    except ValueError as exc:
        raise fail(console, str(exc), 2) from None
    lake_path = lake_dir(lake_path, settings)
    client = None
    if source.startswith("s3://"):
        client = aws.client("s3", endpoint_url=endpoint_url or settings.endpoint_url, region=settings.region)
    with Progress(
        TextColumn("[bold]ingest[/bold] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("listing", total=None)

        def progress(done: int, total: int, done_bytes: int, total_bytes: int) -> None:
            # The bar counts bytes (the real work); the description counts objects.
            bar.update(task, completed=done_bytes, total=max(total_bytes, 1), description=f"{done}/{total} objects")

        try:
            report = ingest(
                source,
                lake_path,
                since=start,
                until=end,
                accounts=tuple(account or ()),
                regions=tuple(region or ()),
                event_sources=settings.event_sources,
                s3_client=client,
                workers=workers or settings.workers,
                progress=progress,
                now=dt.datetime.now(dt.UTC),
            )
        except (SourceError, RunFault) as exc:
            raise fail(console, safe_text.visible(exc)) from None
        except (BotoCoreError, ClientError) as exc:
            raise fail(console, safe_text.visible(_aws_error(exc, source))) from None
        except OSError as exc:  # outside the failure model's mapping: say what failed, blame nothing
            raise fail(console, safe_text.visible(f"{exc}; the batch in progress was not committed: rerun")) from None
    out = make_console()
    out.print(_summary(report, lake_path))
    if report.objects_listed == 0:
        hint = (
            "check the prefix (it should hold AWSLogs/, at most two levels down) and --since/--until/--account/--region"
        )
        out.print(f"[yellow]nothing found under {safe_text.markup(source)}: {hint}")
    if report.quarantine:
        tables.emit(_quarantine_listing(report), "table", console=out)
    if report.quarantined_anything:
        where = safe_text.markup(lake.quarantine_dir(lake_path))
        out.print(f"[yellow]something was quarantined: see {where} (exit code 3)")
        raise typer.Exit(EXIT_QUARANTINED)


def compact_command(
    lake_path: LakeOption = None,
    date: Annotated[
        list[str] | None, typer.Option("--date", help="Partition day to compact (repeatable; default: every day).")
    ] = None,
) -> None:
    """Merge each partition's files into one file sorted by event_time, atomically (readers see the same rows).

    Example: keytrail compact --lake ./lake --date 2024-05-01
    """
    settings = Settings.from_env()
    console = make_console()
    lake_path = lake_dir(lake_path, settings)
    if not lake.events_dir(lake_path).is_dir():
        raise fail(console, f"{lake_path} has no events/: run `keytrail ingest SOURCE --lake {lake_path}` first")
    days = [parse_date(value, "--date") for value in date or ()] or lake.partitions(lake_path)
    now = dt.datetime.now(dt.UTC)
    table = Table(title=f"compact {lake_path}")
    for column in ("day", "files before", "files after", "rows"):
        table.add_column(column, justify="right")
    with Progress(
        TextColumn("[bold]compact"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        for day in bar.track(days):
            try:
                result = lake.compact(lake_path, day, now=now)
            except RuntimeError as exc:
                raise fail(console, str(exc)) from None
            table.add_row(day.isoformat(), str(result.files_before), str(result.files_after), f"{result.rows:,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("ingest", help=_INGEST_HELP)(ingest_command)
    app.command("compact")(compact_command)
