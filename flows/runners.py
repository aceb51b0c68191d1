"""Task-runner choice for the mapped ingest: a local thread pool by default, or a Dask cluster (prefect-dask).

prefect-dask is the optional `keytrail[dask]` extra, so it is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

TASK_RUNNERS: tuple[str, ...] = ("threads", "dask")


def build_task_runner(kind: str = "threads", dask_address: str | None = None, max_workers: int | None = None) -> Any:
    """A fresh task runner: `threads` (ThreadPoolTaskRunner) or `dask` (an existing scheduler, or a local cluster)."""
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise RuntimeError("the dask task runner needs the optional extra: pip install 'keytrail[dask]'") from exc
        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # No address: a temporary LocalCluster; no bokeh here, so no dashboard.
        return DaskTaskRunner(cluster_kwargs={"dashboard_address": None, "n_workers": max_workers})
    raise ValueError(f"unknown task runner {kind!r}: use one of {', '.join(TASK_RUNNERS)}")
