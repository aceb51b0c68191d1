"""Example values for `keytrail query show --lake`: typical values picked from the lake itself (its busiest
principal, key, secret, IP, a recent event, the newest alert), so the printed example returns rows there.
The picking queries are analysis queries (queries/analysis/examples/).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pipeline import catalog
from pipeline.alerting.outbox import Outbox, OutboxError
from pipeline.catalog import Query
from pipeline.engine import Engine, readable_partitions
from pipeline.times import iso, midnight

# The analysis query that picks a typical value for a common param name over the lake's last day of events.
_PICKERS: dict[str, str] = {
    "principal": "example_principal",
    "key": "example_key",
    "resource": "example_key",
    "secret": "example_secret",
    "source_ip": "example_source_ip",
    "event_id": "example_event_id",
}


def lake_example(query: Query, lake_path: Path) -> dict[str, Any] | None:
    """Example values taken from the lake (its last day of events, or its newest alert), or None when the
    lake has no data for this query's required params."""
    if any(p.name == "alert_id" for p in query.params):
        return _alert_example(lake_path)
    days = readable_partitions(lake_path)
    if not days:
        return None
    last = max(days)
    pickers = {q.id: q for q in catalog.load("analysis")}
    with Engine.for_lake(lake_path, midnight(last), midnight(last + dt.timedelta(days=1))) as engine:
        latest = engine.run(pickers["latest_event_time"]).column("latest")[0].as_py()
        if latest is None:
            return None
        until = latest.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        since = until - dt.timedelta(days=1)
        values: dict[str, Any] = {}
        for param in query.params:
            if not (param.required or param.name in query.example):
                continue  # optional params keep their defaults, as in the YAML example
            if param.name in _PICKERS:
                rows = engine.run(pickers[_PICKERS[param.name]], {"since": since}).to_pylist()
                if rows:
                    values[param.name] = next(iter(rows[0].values()))
                elif param.required:
                    return None
            elif param.name in query.example:
                values[param.name] = query.example[param.name]
            else:
                return None
    return {**values, "since": iso(since), "until": iso(until)}


def _alert_example(lake_path: Path) -> dict[str, Any] | None:
    try:
        with Outbox.open(lake_path, create=False) as box:
            entries = box.entries()
    except OutboxError:
        return None
    return {"alert_id": entries[0].alert.alert_id[:12]} if entries else None
