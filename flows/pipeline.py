"""`keytrail_pipeline`: the scheduled job. Ingest what CloudTrail delivered recently, verify the trail's
digests and log files, then detect and alert."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import flow

from flows.detect import DEFAULT_HORIZON, evaluate_window, resolve_now
from flows.ingest import ingest_cloudtrail
from flows.logs import route_library_logs
from flows.runners import build_task_runner
from flows.verify import verify_trail
from pipeline.settings import Settings
from pipeline.times import parse_duration


@flow(name="keytrail-pipeline")
def keytrail_pipeline(
    source: str,
    lake: str | None = None,
    horizon: str = DEFAULT_HORIZON,
    publish: bool = True,
    now: dt.datetime | None = None,
    task_runner: str = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Ingest the day prefixes the horizon touches (new objects only), then evaluate [now - horizon, now).

    Listing covers (now - horizon).date() .. now.date(): a file delivered late lands in the prefix of its
    delivery day, so it is still listed while its events are inside the horizon. `task_runner="dask"` (with
    `dask_address`) runs the mapped ingest chunks on a Dask cluster.
    """
    route_library_logs()
    settings = Settings.from_env()
    lake_path = str(lake or settings.lake)
    until = resolve_now(now)
    since = until - parse_duration(horizon)
    ingest_flow = ingest_cloudtrail.with_options(task_runner=build_task_runner(task_runner, dask_address))
    ingested = ingest_flow(source, lake_path, since=since.date(), until=until.date())
    # Before detecting: the trail_integrity_failure detection reads what this step records.
    verified = verify_trail(source, lake_path, since.date(), until.date(), until)
    alerts = evaluate_window(lake_path, since, until, now=until, publish=publish, settings=settings)
    return {"ingest": ingested, "verify": verified, "detect": alerts}
