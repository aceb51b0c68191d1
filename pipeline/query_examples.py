"""Example values for `keytrail query show --lake`: typical values picked from the lake itself (its busiest
principal, key, secret, IP, a recent event, the newest alert), so the printed example returns rows there.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pipeline.catalog import Query
from pipeline.engine import Engine, readable_partitions
from pipeline.outbox import Outbox, OutboxError
from pipeline.times import iso, midnight

# Typical values for common param names, picked from the lake so `query show --lake` prints an example that
# returns rows there. Each runs over the lake's last day of events and returns one value (or none).
_EXAMPLE_SQL: dict[str, str] = {
    "principal": """
        SELECT coalesce(session_issuer_arn, principal_arn) FROM events
        WHERE event_time >= $since AND coalesce(session_issuer_arn, principal_arn) IS NOT NULL
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""",
    "key": """
        SELECT key_arn FROM events WHERE event_time >= $since AND key_arn IS NOT NULL
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""",
    "secret": """
        SELECT secret_id FROM events
        WHERE event_time >= $since AND event_name = 'GetSecretValue' AND secret_id IS NOT NULL
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""",
    "source_ip": """
        SELECT source_ip FROM events
        WHERE event_time >= $since AND principal_arn IS NOT NULL AND regexp_matches(source_ip, '^[0-9.:a-f]+$')
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""",
    "event_id": """
        SELECT event_id FROM events WHERE event_time >= $since
        ORDER BY error_code IS NULL, event_time DESC, event_id LIMIT 1""",
}
_EXAMPLE_SQL["resource"] = _EXAMPLE_SQL["key"]


def lake_example(query: Query, lake_path: Path) -> dict[str, Any] | None:
    """Example values taken from the lake (its last day of events, or its newest alert), or None when the
    lake has no data for this query's required params."""
    if any(p.name == "alert_id" for p in query.params):
        return _alert_example(lake_path)
    days = readable_partitions(lake_path)
    if not days:
        return None
    last = max(days)
    with Engine.for_lake(lake_path, midnight(last), midnight(last + dt.timedelta(days=1))) as engine:
        latest = engine.sql("SELECT max(event_time) AS t FROM events").column("t")[0].as_py()
        if latest is None:
            return None
        until = latest.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        since = until - dt.timedelta(days=1)
        values: dict[str, Any] = {}
        for param in query.params:
            if not (param.required or param.name in query.example):
                continue  # optional params keep their defaults, as in the YAML example
            if param.name in _EXAMPLE_SQL:
                rows = engine.sql(_EXAMPLE_SQL[param.name], {"since": since}).to_pylist()
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
