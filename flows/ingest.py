"""`ingest_cloudtrail`: discover the trail's account/region/day partitions, map the ingest over them.

One task per account/region/day chunk: list the day's objects, then ingest them (each chunk commits its own
atomic batch; `ingest_objects` is safe to run concurrently on one lake). Tasks exchange `TrailDay`s and
`LogObject` keys, never event data, so the mapped tasks can run on a Dask cluster as they are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from functools import reduce
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from flows.clients import s3_client_for
from flows.logs import route_library_logs
from pipeline import ingest, s3, safe_text
from pipeline.ingest import IngestReport
from pipeline.lake import is_remote
from pipeline.s3 import LogObject, TrailDay
from pipeline.settings import Settings

# Every step has side effects whose idempotency lives in the lake (ledger, outbox): never skip one on a cache.
_IO = {"cache_policy": NO_CACHE, "retries": 3, "retry_delay_seconds": [2, 10, 30]}


@task(name="discover-partitions", **_IO)
def discover_days(
    source: str,
    since: dt.date | None,
    until: dt.date | None,
    accounts: Sequence[str],
    regions: Sequence[str],
    endpoint_url: str | None,
    region: str | None,
) -> list[TrailDay]:
    client = s3_client_for(source, endpoint_url, region)
    days = s3.discover_partitions(source, client, since, until, accounts, regions)
    get_run_logger().info(
        "%s: %d account/region/day partitions in [%s, %s]", safe_text.visible(source), len(days), since, until
    )
    return days


@task(name="list-day", task_run_name="list {day.account}/{day.region}/{day.day}", **_IO)
def list_day(day: TrailDay, endpoint_url: str | None, region: str | None) -> list[LogObject]:
    objects = s3.list_objects(day, s3_client_for(day.source, endpoint_url, region))
    # Account and region are folder names under AWSLogs/: whoever can write to the bucket chose them.
    where = safe_text.visible(f"{day.account}/{day.region}/{day.day}")
    get_run_logger().info("%s: %d objects listed", where, len(objects))
    return objects


@task(name="ingest-chunk", task_run_name="ingest {label}", **_IO)
def ingest_chunk(
    objects: list[LogObject],
    label: str,
    lake: str,
    event_sources: Sequence[str],
    endpoint_url: str | None,
    region: str | None,
    cache_dir: Path | None = None,
) -> IngestReport:
    client = s3_client_for(objects[0].source, endpoint_url, region) if objects else None
    # An s3:// lake stays a URL up to here: each worker (any machine) commits through its own replica of it.
    lake_client = s3_client_for("s3://", endpoint_url, region) if is_remote(lake) else None
    report = ingest.ingest_objects(
        objects, lake, event_sources=event_sources, s3_client=client, lake_client=lake_client, cache_dir=cache_dir
    )
    get_run_logger().info(
        "%s: %d objects read, %d skipped, %d quarantined; %d events kept, %d duplicates",
        safe_text.visible(label),
        report.objects_read,
        report.objects_skipped,
        report.objects_quarantined,
        report.events_kept,
        report.events_duplicate,
    )
    return report


def report_dict(report: IngestReport, partitions: int) -> dict[str, Any]:
    """The report as plain JSON-ready data (what the flow returns and Prefect stores)."""
    data = dataclasses.asdict(report)
    data["partitions"] = partitions
    data["events_per_second"] = round(report.events_per_second, 1)
    data["quarantined_anything"] = report.quarantined_anything
    return data


@flow(name="ingest-cloudtrail", log_prints=False)
def ingest_cloudtrail(
    source: str,
    lake: str | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    accounts: list[str] | None = None,
    regions: list[str] | None = None,
) -> dict[str, Any]:
    """Ingest CloudTrail from `source` (s3://bucket[/prefix] or a folder) for days [since, until] into the lake.

    Run it with `.with_options(task_runner=flows.runners.build_task_runner("dask", address))` to spread the
    chunks over a Dask cluster.
    """
    route_library_logs()
    started = time.perf_counter()
    settings = Settings.from_env()
    lake_path = str(lake or settings.lake)
    days = discover_days(
        source, since, until, tuple(accounts or ()), tuple(regions or ()), settings.endpoint_url, settings.region
    )
    endpoint, region = unmapped(settings.endpoint_url), unmapped(settings.region)
    listed = list_day.map(days, endpoint, region)
    labels = [f"{d.account}/{d.region}/{d.day}" for d in days]
    reports = ingest_chunk.map(
        listed,
        labels,
        unmapped(lake_path),
        unmapped(tuple(settings.event_sources)),
        endpoint,
        region,
        unmapped(settings.cache_dir),
    )
    total = reduce(IngestReport.merge, (future.result() for future in reports), IngestReport())
    total.seconds = time.perf_counter() - started  # wall time: the chunks' own seconds overlap
    get_run_logger().info(
        "ingested %d partitions: %d objects read, %d events kept, %d quarantined objects",
        len(days),
        total.objects_read,
        total.events_kept,
        total.objects_quarantined,
    )
    return report_dict(total, len(days))
