"""`compact`: the daily job merging a lake partition's small batch files into one file sorted by event_time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.detect import resolve_now
from flows.logs import route_library_logs
from pipeline import lake as lake_store
from pipeline.settings import Settings


@task(name="compact-partition", task_run_name="compact {day}", cache_policy=NO_CACHE)
def compact_partition(lake: str, day: dt.date) -> dict[str, Any]:
    report = lake_store.compact(Path(lake), day)
    get_run_logger().info("%s: %d files -> %d (%d rows)", day, report.files_before, report.files_after, report.rows)
    return {
        "day": day.isoformat(),
        "files_before": report.files_before,
        "files_after": report.files_after,
        "rows": report.rows,
    }


@flow(name="keytrail-compact")
def compact(lake: str | None = None, date: dt.date | None = None) -> dict[str, Any]:
    """Compact one day's partition; by default yesterday's (UTC), which no longer receives files.

    Late CloudTrail files can still add a small batch to a compacted day; the next compaction merges it.
    """
    route_library_logs()
    settings = Settings.from_env()
    day = date or (resolve_now(None) - dt.timedelta(days=1)).date()
    return compact_partition(str(lake or settings.lake), day)
