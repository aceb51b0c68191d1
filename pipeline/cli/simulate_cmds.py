"""`keytrail simulate`: write a realistic CloudTrail trail (with injected incidents) to a folder or S3."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import aws, safe_text
from pipeline.cli.common import fail, make_console, parse_date
from pipeline.settings import Settings
from pipeline.simulate import (
    ALL_INCIDENTS,
    DEFAULT_EVENTS_PER_DAY,
    EVASIVE_INCIDENTS,
    MANIFEST,
    SimulationResult,
    simulate,
)
from pipeline.simulate.digests import PUBLIC_KEYS
from pipeline.simulate.tamper import TAMPERINGS, tamper_simulation

_HELP = (
    "Write a realistic CloudTrail trail in the real S3 layout: 4 accounts (an organization trail, or one account "
    "with --single-account) x 2 regions, KMS + Secrets Manager about a third of the events, diurnal load, "
    "hourly digest files, the benign look-alikes detections must ignore, and injected incidents on the last day "
    f"(one per hour; the evasive ones, {', '.join(EVASIVE_INCIDENTS)}, pick their own hours, some across a clock "
    f"hour). `{MANIFEST}` next to AWSLogs/ lists where each incident landed. The same --seed always "
    "gives the same bytes.\n\n"
    f"Incidents: {', '.join(ALL_INCIDENTS)}.\n\n"
    "Example: keytrail simulate --out ./trail --days 8 --seed 7 --incidents decrypt_spike,key_deletion\n\n"
    "Example: keytrail simulate --out s3://trail-bucket/cloudtrail --days 3 --seed 1 --endpoint-url "
    "http://127.0.0.1:5000 --create-bucket"
)


_TAMPER_NAMES = ", ".join(TAMPERINGS)


def _incident_names(value: str) -> tuple[str, ...]:
    value = value.strip()
    if value == "all":
        return ALL_INCIDENTS
    if value in ("none", ""):
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_INCIDENTS]
    if unknown:
        raise typer.BadParameter(
            f"unknown incident(s) {', '.join(unknown)}; use all, none or a comma list of: {', '.join(ALL_INCIDENTS)}",
            param_hint="--incidents",
        )
    return names


def _start(value: str | None, days: int) -> dt.date:
    if value is None:  # the CLI is the entry point: the only place that reads the clock
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
    return parse_date(value, "--start")


def _summary(result: SimulationResult) -> Table:
    table = Table(title=f"simulated trail in {safe_text.markup(result.out)}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    share = (result.kms_events + result.secrets_events) / result.events if result.events else 0.0
    last = result.start + dt.timedelta(days=result.days - 1)
    for name, value in (
        ("days", f"{result.start} .. {last}"),
        ("organization", result.org_id or "(single-account trail)"),
        ("accounts x regions", f"{len(result.accounts)} x {len(result.regions)} ({', '.join(result.regions)})"),
        ("log files", f"{result.files:,}"),
        ("digest files", f"{result.digest_files:,}"),
        ("events", f"{result.events:,}"),
        ("KMS events", f"{result.kms_events:,}"),
        ("Secrets Manager events", f"{result.secrets_events:,}"),
        ("KMS + Secrets Manager share", f"{share:.0%}"),
        ("MB written (gzip)", f"{result.bytes_written / 1e6:,.1f}"),
        ("seconds", f"{result.seconds:.2f}"),
        ("events/s", f"{result.events_per_second:,.0f}"),
    ):
        table.add_row(name, value)
    return table


def _incidents(result: SimulationResult) -> Table:
    table = Table(title="injected incidents (the detection that must find each)")
    for column in ("incident", "detection", "principal", "UTC", "events"):
        table.add_column(column, overflow="fold")
    for incident in result.incidents:
        who = (incident.principal_arn or "(service event)").rsplit("/", 1)[-1]
        when = f"{incident.start:%Y-%m-%d %H:%M}-{incident.end:%H:%M}"
        table.add_row(incident.name, incident.detection_id, safe_text.terminal(who), when, str(len(incident.event_ids)))
    return table


def _ensure_bucket(client: object, out: str, console: Console) -> None:
    bucket = out[5:].split("/", 1)[0]
    try:
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    console.print(f"bucket s3://{safe_text.markup(bucket)} ready")


def simulate_command(
    out: Annotated[str, typer.Option("--out", help="Folder or s3://bucket\\[/prefix] to write the trail to.")],
    days: Annotated[int, typer.Option("--days", min=1, help="Days to simulate (the last one gets the incidents).")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same bytes.")] = 7,
    start: Annotated[
        str | None, typer.Option("--start", help="First day, YYYY-MM-DD (default: today UTC minus --days).")
    ] = None,
    incidents: Annotated[
        str, typer.Option("--incidents", help="all, none, or a comma list of incident names (see above).")
    ] = "all",
    single_account: Annotated[
        bool, typer.Option("--single-account", help="One account's trail (AWSLogs/<acct>/) instead of an org trail.")
    ] = False,
    events_per_day: Annotated[
        int, typer.Option("--events-per-day", min=100, help="Whole-trail events per day (all services).")
    ] = DEFAULT_EVENTS_PER_DAY,
    kms_only: Annotated[
        bool, typer.Option("--kms-only", help="Only KMS + Secrets Manager events (detection benchmarks).")
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Generator processes.")] = 1,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3 endpoint, e.g. a local moto server.")
    ] = None,
    create_bucket: Annotated[
        bool, typer.Option("--create-bucket", help="Create the s3:// bucket first if it does not exist.")
    ] = False,
    tampering: Annotated[
        list[str] | None,
        typer.Option(
            "--tamper", help=f"Tamper with the signed trail afterwards (repeatable): {', '.join(TAMPERINGS)}."
        ),
    ] = None,
) -> None:
    settings = Settings.from_env()
    console = make_console(stderr=True)
    names = _incident_names(incidents)
    first = _start(start, days)
    client = None
    if out.startswith("s3://"):
        client = aws.client("s3", endpoint_url=endpoint_url or settings.endpoint_url, region=settings.region)
    with Progress(
        TextColumn("[bold]simulate[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def progress(done: int, total: int, events: int) -> None:
            bar.update(task, completed=done, total=total, description=f"{events:,} events")

        try:
            if client is not None and create_bucket:
                _ensure_bucket(client, out, console)
            result = simulate(
                out, days=days, seed=seed, start=first, incidents=names, org=not single_account,
                events_per_day=events_per_day, kms_only=kms_only, s3_client=client, workers=workers,
                progress=progress,
            )  # fmt: skip
            tampered = tamper_simulation(out, result, tampering, client) if tampering else []
        except ValueError as exc:
            raise fail(console, str(exc), 2) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            hint = " (pass --create-bucket, or create it first)" if code == "NoSuchBucket" else ""
            raise fail(console, f"S3 said {code or exc}{hint}; fix it and rerun") from None
        except BotoCoreError as exc:
            raise fail(console, f"cannot reach S3 ({exc}); check --endpoint-url, then rerun") from None
        except OSError as exc:
            raise fail(console, f"{exc}: check that --out {out} is writable") from None
    report = make_console()
    report.print(_summary(result))
    if result.incidents:
        report.print(_incidents(result))
    for done in tampered:
        names = ", ".join(safe_text.markup(key.rpartition("/")[2]) for key in done.objects)
        report.print(f"[yellow]tampered ({done.name})[/yellow]: {names} -> keytrail verify must say {done.expect}")
    where = out.rstrip("/") + "/" + MANIFEST
    report.print(
        f"incidents and look-alikes: {safe_text.markup(where)}; next: keytrail ingest {safe_text.markup(out)} "
        f"--lake ./lake; keytrail verify {safe_text.markup(out)} --public-keys {safe_text.markup(out.rstrip('/'))}/"
        f"{PUBLIC_KEYS}"
    )


def register(app: typer.Typer) -> None:
    """Add `keytrail simulate` to the app."""
    app.command("simulate", help=_HELP)(simulate_command)
