"""`keytrail demo`: the scheduled job end to end on a local AWS endpoint, through Prefect's temporary server.

Import this module only inside `pipeline.demo.demo_environment()`: Prefect reads its telemetry and logging
settings when it is imported and when its temporary server starts.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.backfill import backfill
from flows.pipeline import keytrail_pipeline
from pipeline import aws
from pipeline import demo as parts
from pipeline import lake as lakelib
from pipeline.alerting.outbox import Outbox, OutboxEntry
from pipeline.cli.common import make_console
from pipeline.lake import committed_files
from pipeline.settings import Settings
from pipeline.simulate.digests import PUBLIC_KEYS
from pipeline.simulate.results import SimulationResult
from pipeline.simulate.run import simulate
from pipeline.times import midnight

# Two member accounts of an organization trail in two regions: every incident type has a home, and the
# demo's ~9k log objects go through the local endpoint in well under a minute.
DEMO_ACCOUNTS = 2
DEMO_REGIONS: tuple[str, ...] = ("us-east-1", "eu-west-1")


@dataclass
class DemoOutcome:
    simulation: SimulationResult
    entries: list[OutboxEntry]
    messages: list[parts.ReceivedMessage]
    reconciliation: parts.Reconciliation
    incidents_found: dict[str, str | None]
    history: dict[str, Any]
    final: dict[str, Any]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.reconciliation.matches and all(self.incidents_found.values())


def _simulate(console: Console, source: str, s3: Any, *, days: int, seed: int, start: dt.date, **extra: Any) -> Any:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {days} days of CloudTrail into {source}", total=None)

        def update(done: int, total: int, events: int) -> None:
            progress.update(task, completed=done, total=total)

        return simulate(source, days=days, seed=seed, start=start, s3_client=s3, progress=update, **extra)


def run_demo(
    lake: Path | str,
    *,
    days: int = 8,
    seed: int = 7,
    keep_running: bool = False,
    console: Console | None = None,
    today: dt.date | None = None,
    accounts: int = DEMO_ACCOUNTS,
    events_per_day: int | None = None,
) -> DemoOutcome:
    """Simulate `days` days ending yesterday (UTC) into a local bucket, backfill the history, run the pipeline
    for the final day, and check every SNS message a subscriber got against the outbox."""
    if days < 2:
        raise ValueError("the demo needs at least 2 days: history for the baselines, then the final day")
    console = console or make_console()
    started = time.monotonic()
    lake_url = lakelib.normalize_url(lake) if lakelib.is_remote(lake) else None
    if lake_url is None:
        lake = Path(lake).resolve()
        parts.prepare_lake(lake)
    today = today or dt.datetime.now(dt.UTC).date()
    start = today - dt.timedelta(days=days)
    final_day = today - dt.timedelta(days=1)
    with parts.LocalAws() as local:
        console.print(f"[bold]keytrail demo[/]: local AWS endpoint (moto) at {local.url}")
        s3, sns, sqs = (aws.client(name, endpoint_url=local.url) for name in ("s3", "sns", "sqs"))
        resources = parts.create_resources(s3, sns, sqs)
        source = f"s3://{resources.bucket}"
        extra = {"events_per_day": events_per_day} if events_per_day else {}
        simulation = _simulate(
            console, source, s3, days=days, seed=seed, start=start, accounts=accounts, regions=DEMO_REGIONS, **extra
        )
        console.print(
            f"simulated {simulation.events:,} events in {simulation.files:,} log objects "
            f"({len(simulation.incidents)} incidents on {final_day})"
        )
        # The simulator signs its digests with its own key and puts the matching ListPublicKeys response beside
        # the trail: the pipeline's verify step checks the final day's chain with it.
        settings = {"KEYTRAIL_ENDPOINT_URL": local.url, "KEYTRAIL_TOPIC_ARN": resources.topic_arn,
                    "KEYTRAIL_LAKE": lake_url or str(lake),
                    "KEYTRAIL_PUBLIC_KEYS": f"{source}/{PUBLIC_KEYS}"}  # fmt: skip
        if lake_url is not None:  # an S3 lake in the local endpoint; this run's replica in a fresh cache folder
            s3.create_bucket(Bucket=lake_url[len("s3://") :].split("/", 1)[0])
            settings["KEYTRAIL_CACHE"] = tempfile.mkdtemp(prefix="keytrail-demo-cache-")
        # The heartbeat thread costs ~1 s per flow run and has no environment variable.
        with parts.scoped_environment(settings), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            with console.status(f"Prefect: backfill {start} .. {final_day - dt.timedelta(days=1)} (history)"):
                history = backfill(
                    source, since=start, until=final_day - dt.timedelta(days=1), lake=lake_url or str(lake)
                )
            with console.status(f"Prefect: keytrail_pipeline for {final_day}"):
                final = keytrail_pipeline(source, lake_url or str(lake), horizon="24h", now=midnight(today))
            if lake_url is not None:
                lake = lakelib.lake_dir(lake_url, Settings.from_env())  # the replica the flows worked through
        messages = parts.receive_all(sqs, resources.queue_url)
        with Outbox.open(lake) as box:
            entries = box.entries()
        found = parts.incident_alerts(simulation.incidents, [e.alert for e in entries])
        facts = {
            "simulated": f"{simulation.events:,} events, {simulation.files:,} log objects, {days} days, "
            f"{len(simulation.accounts)} accounts x {len(simulation.regions)} regions",
            "lake": f"{len(committed_files(lake)):,} Parquet files in {lake_url or lake}",
            "Prefect runs": "keytrail-backfill (history), keytrail-pipeline (final day)",
            "trail integrity": final.get("verify", {}).get("coverage") or f"not verified ({final.get('verify')})",
            "elapsed": f"{time.monotonic() - started:.0f} s",
        }
        reconciliation = parts.render_summary(
            console,
            entries=entries,
            messages=messages,
            incidents=simulation.incidents,
            facts=facts,
            lake=lake_url or str(lake),
        )
        if keep_running:
            _wait_for_interrupt(console, local.url, resources)
    return DemoOutcome(simulation, entries, messages, reconciliation, found, history, final, time.monotonic() - started)


def _wait_for_interrupt(console: Console, url: str, resources: parts.DemoResources) -> None:
    console.print(
        f"\n[bold]The local AWS endpoint stays up at {url}[/] (Ctrl-C stops it). From another shell:\n"
        f"  export AWS_ENDPOINT_URL={url} AWS_ACCESS_KEY_ID=keytrail-demo AWS_SECRET_ACCESS_KEY=keytrail-demo "
        "AWS_DEFAULT_REGION=us-east-1\n"
        f"  aws s3 ls s3://{resources.bucket}/AWSLogs/ --recursive | head\n"
        f"  keytrail ingest s3://{resources.bucket} --lake ./lake2 --endpoint-url {url}",
        soft_wrap=True,
        highlight=False,
    )
    try:
        while True:
            # Short sleeps, not one endless wait: Ctrl-C may land on another thread (Prefect's), and the main
            # thread only runs the KeyboardInterrupt handler when it wakes up.
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping the local AWS endpoint")
