"""`backfill`: ingest a historical range, then detect and alert over it one day at a time, oldest first.

Safe to stop and resume (or simply rerun): ingest skips objects already in the ledger, detection is a pure
read, and alert ids are deterministic so the outbox keeps each alert once and SNS sends it once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow, get_run_logger

from flows.detect import evaluate_window, resolve_now
from flows.ingest import ingest_cloudtrail
from flows.logs import route_library_logs
from flows.runners import build_task_runner
from pipeline.settings import Settings


def day_windows(since: dt.date, until: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    """[day 00:00, next day 00:00) UTC for each day of [since, until]."""
    if since > until:
        raise ValueError(f"since {since} is after until {until}: swap them")
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    return [(start + dt.timedelta(days=n), start + dt.timedelta(days=n + 1)) for n in range((until - since).days + 1)]


@flow(name="keytrail-backfill")
def backfill(
    source: str,
    since: dt.date,
    until: dt.date,
    lake: str | None = None,
    publish: bool = True,
    task_runner: str = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Ingest [since, until + 1 day] (mapped per account/region/day), then evaluate each day of [since, until].

    The day after `until` is listed too: CloudTrail files land in the prefix of their delivery time, so the
    last minutes of a day sit in the next day's prefix.
    """
    route_library_logs()
    settings = Settings.from_env()
    lake_path = str(lake or settings.lake)
    windows = day_windows(since, until)  # validates the range before any work
    now = resolve_now(None)
    ingest_flow = ingest_cloudtrail.with_options(task_runner=build_task_runner(task_runner, dask_address))
    ingested = ingest_flow(source, lake_path, since=since, until=until + dt.timedelta(days=1))
    days = [
        evaluate_window(lake_path, start, end, now=now, publish=publish, settings=settings) for start, end in windows
    ]
    get_run_logger().info(
        "backfill %s..%s: %d findings, %d new alerts, %d SNS messages",
        since,
        until,
        sum(d["findings"] for d in days),
        sum(len(d["queued"]) for d in days),
        sum(d["messages"] for d in days),
    )
    return {"ingest": ingested, "days": days}
