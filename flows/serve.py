"""`keytrail serve`: the scheduled deployments, served by this process.

    keytrail-pipeline/keytrail-pipeline   every 5 min: ingest new CloudTrail files, detect over the last 2 h, alert
    keytrail-compact/keytrail-compact     daily at 00:30 UTC: compact yesterday's lake partition
    keytrail-backfill/keytrail-backfill   no schedule: run it by hand for a historical range
                                          (prefect deployment run keytrail-backfill/keytrail-backfill
                                           -p since=2024-05-01 -p until=2024-05-31)

Schedules only fire against a real Prefect server (the temporary server Prefect starts on its own never
schedules anything): run `prefect server start --host 127.0.0.1` and point `PREFECT_API_URL` at it first.
Parameters come from the settings (KEYTRAIL_LAKE ...) and the command line; every run reads the rest of its
settings (topic, endpoint, region) from the environment it runs in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.types.entrypoint import EntrypointType

from flows.backfill import backfill
from flows.compact import compact
from flows.detect import DEFAULT_HORIZON
from flows.pipeline import keytrail_pipeline

PIPELINE_DEPLOYMENT = "keytrail-pipeline/keytrail-pipeline"
COMPACT_DEPLOYMENT = "keytrail-compact/keytrail-compact"
BACKFILL_DEPLOYMENT = "keytrail-backfill/keytrail-backfill"
DEFAULT_EVERY = dt.timedelta(minutes=5)
# 00:30 UTC: late CloudTrail files for yesterday have landed by then (those arriving later still get merged the
# next night: compaction merges whatever files a partition has).
DEFAULT_COMPACT_CRON = "30 0 * * *"


@dataclass(frozen=True)
class ServeOptions:
    source: str
    lake: Path
    every: dt.timedelta = DEFAULT_EVERY
    compact_cron: str = DEFAULT_COMPACT_CRON
    horizon: str = DEFAULT_HORIZON
    publish: bool = True
    task_runner: str = "threads"
    dask_address: str | None = None


def build_deployments(options: ServeOptions) -> list[Any]:
    """The RunnerDeployments. Entry points are module paths (`flows.pipeline.keytrail_pipeline`), so runs
    work from any working directory where keytrail is installed."""
    lake = str(options.lake.resolve())
    # A slow run (a big backlog) must not overlap the next one; the next one simply starts later.
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    source_parameters = {
        "source": options.source,
        "lake": lake,
        "task_runner": options.task_runner,
        "dask_address": options.dask_address,
    }
    pipeline = keytrail_pipeline.to_deployment(
        name="keytrail-pipeline",
        interval=options.every,
        parameters={**source_parameters, "horizon": options.horizon, "publish": options.publish},
        concurrency_limit=one_at_a_time,
        description="Ingest new CloudTrail files, run the detections over the trailing horizon, publish alerts.",
        tags=["keytrail"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    daily = compact.to_deployment(
        name="keytrail-compact",
        cron=options.compact_cron,
        parameters={"lake": lake},
        concurrency_limit=1,
        description="Merge yesterday's small lake files into one sorted file.",
        tags=["keytrail"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    history = backfill.to_deployment(
        name="keytrail-backfill",
        parameters=source_parameters,
        description="Ingest and evaluate a historical range, day by day (pass since and until).",
        tags=["keytrail"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [pipeline, daily, history]


def serve_forever(deployments: Sequence[Any]) -> None:
    """Register the deployments and run their scheduled runs until interrupted (Ctrl-C / SIGTERM)."""
    from prefect import serve

    serve(*deployments, print_starting_message=True)
