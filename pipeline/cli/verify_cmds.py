"""`keytrail verify`: check a trail's digest chains and log files, record the verdicts in the lake.

Exit codes: 0 every digest and log file of the period verified; 3 something did not (modified, missing, moved,
unsigned or not covered: see the table and the lake's `integrity/` table); 1 error; 2 usage.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline import aws, safe_text, times
from pipeline.cli.common import fail, make_console, parse_date
from pipeline.integrity import keys as public_keys
from pipeline.integrity.results import STATUSES, Coverage, status_counts
from pipeline.integrity.verify import VerifyReport, save, verify_source
from pipeline.s3 import SourceError
from pipeline.settings import Settings

EXIT_FAILED_VERIFICATION = 3
_SHOWN = 20

_HELP = (
    "Verify a CloudTrail trail: each digest's RSA signature (SHA256withRSA) and place in its chain, every hour's "
    "digest, each log file's SHA-256 (one gzip member: appended bytes are a modification), and log files no "
    "digest lists. Results go to the lake's integrity/ table (feeding the trail_integrity_failure detection).\n\n"
    "SOURCE is s3://bucket\\[/prefix] or a folder with the CloudTrail layout. Public keys come from CloudTrail "
    "ListPublicKeys in each region (needs cloudtrail:ListPublicKeys), or offline from --public-keys FILE (the "
    "JSON of `aws cloudtrail list-public-keys`; `keytrail simulate` writes one as public-keys.json).\n\n"
    "Exit codes: 0 all verified, 3 something failed verification, 1 error, 2 usage.\n\n"
    "Example: keytrail verify ./trail --public-keys ./trail/public-keys.json --since 2024-05-01 --until 2024-05-07"
)


def _keys(location: str | None, s3: Any, endpoint: str | None, start: dt.date | None, end: dt.date | None,
          now: dt.datetime) -> Any:  # fmt: skip
    if location is not None:
        return public_keys.load(location, s3)
    begin = times.midnight(start - dt.timedelta(days=1)) if start else times.EARLIEST
    finish = min(times.midnight(end + dt.timedelta(days=2)), now) if end else now
    return public_keys.per_region(lambda region: aws.client("cloudtrail", endpoint_url=endpoint, region=region),
                                  begin, finish)  # fmt: skip


def _summary(report: VerifyReport) -> Table:
    table = Table(title="verify", show_header=True)
    table.add_column("kind")
    for status in STATUSES:
        table.add_column(status, justify="right")
    counts = status_counts(report.rows)
    for kind in ("digest", "log"):
        cells = []
        for status in STATUSES:
            count = counts.get((kind, status), 0)
            style = "green" if status == "valid" else "red" if count else "dim"
            cells.append(f"[{style}]{count:,}[/]")
        table.add_row(kind, *cells)
    table.caption = (
        f"{report.trails} account/regions, {report.objects_read:,} objects read "
        f"({report.bytes_read / 1e6:,.1f} MB) in {report.seconds:.1f} s: {report.objects_per_second:,.0f} objects/s"
    )
    return table


def _problems(report: VerifyReport) -> Table:
    table = Table(title="what failed verification")
    for column in ("status", "kind", "account/region", "hour", "object", "reason"):
        table.add_column(column, overflow="fold", ratio=3 if column == "reason" else None)
    problems = [row for row in report.rows if row.problem]
    for row in problems[:_SHOWN]:
        where = safe_text.terminal(f"{row.account_id} {row.region}")
        name = safe_text.terminal(row.object.rpartition("/")[2] or "(name unknown)")
        table.add_row(
            row.status, row.kind, where, times.display(row.period_start), name, safe_text.terminal(row.reason or "")
        )
    if len(problems) > _SHOWN:
        table.add_row(f"... and {len(problems) - _SHOWN:,} more (all in the lake's integrity/ table)", *[""] * 5)
    return table


def verify_command(
    source: Annotated[str, typer.Argument(help="s3://bucket\\[/prefix] or a folder holding AWSLogs/...")],
    lake_path: Annotated[
        Path | None, typer.Option("--lake", help="Lake to record the results in (default: KEYTRAIL_LAKE).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="First day (YYYY-MM-DD, inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last day (YYYY-MM-DD, inclusive).")] = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only this account id (repeatable).")] = None,
    region: Annotated[list[str] | None, typer.Option("--region", help="Only this region (repeatable).")] = None,
    public_keys_file: Annotated[
        str | None,
        typer.Option(
            "--public-keys",
            help="ListPublicKeys response JSON, a file or s3://bucket/key (default: KEYTRAIL_PUBLIC_KEYS, else ask "
            "CloudTrail).",
        ),
    ] = None,
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Write the results to the lake's integrity/ table.")
    ] = True,
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="S3/CloudTrail endpoint.")] = None,
) -> None:
    settings = Settings.from_env()
    console = make_console(stderr=True)
    start = parse_date(since, "--since") if since else None
    end = parse_date(until, "--until") if until else None
    try:
        times.check_days(start, end)
    except ValueError as exc:
        raise fail(console, str(exc), 2) from None
    now = dt.datetime.now(dt.UTC)
    endpoint = endpoint_url or settings.endpoint_url
    keys_at = public_keys_file or settings.public_keys
    on_s3 = source.startswith("s3://") or (keys_at or "").startswith("s3://")
    client = aws.client("s3", endpoint_url=endpoint, region=settings.region) if on_s3 else None
    try:
        keys = _keys(keys_at, client, endpoint, start, end, now)
        with Progress(TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task("verify", total=None)
            report = verify_source(
                source, keys, client=client, since=start, until=end, accounts=tuple(account or ()),
                regions=tuple(region or ()), now=now,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    except (SourceError, public_keys.KeyFileError) as exc:
        raise fail(console, safe_text.visible(exc)) from None
    except (BotoCoreError, ClientError) as exc:
        what = "ListPublicKeys needs cloudtrail:ListPublicKeys (or pass --public-keys FILE)"
        raise fail(
            console, safe_text.visible(f"AWS error: {exc}; {what}; S3 needs s3:ListBucket, s3:GetObject")
        ) from None
    out = make_console()
    out.print(_summary(report))
    if not report.rows:
        out.print(f"[yellow]nothing to verify under {safe_text.markup(source)}: check the prefix and the filters")
    coverage = Coverage.of(report.rows)
    out.print(f"[bold]{coverage.line()}[/bold]")
    if record and report.rows:
        lake_path = lake_path if lake_path is not None else settings.lake
        written = save(report, lake_path, now)
        out.print(f"recorded {written:,} rows in {safe_text.markup(lake_path)}/integrity/")
    if any(row.problem for row in report.rows):
        out.print(_problems(report))
        raise typer.Exit(EXIT_FAILED_VERIFICATION)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("verify", help=_HELP)(verify_command)
