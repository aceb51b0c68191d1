"""Run the detection catalog over a window of the lake and turn result rows into `Alert`s.

The window is [since, until); each detection judges every bucket of it against that bucket's own `lookback`
(queries/README.md), so one run over a range gives the findings of the scheduled runs covering it. The engine
reads the partitions of [since - the longest lookback, until) once, and every detection runs in that one session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import catalog
from pipeline.alerting.alert import SEVERITY_RANK, Alert, alert_order, make_alert_id, make_dedup_key
from pipeline.catalog import Query, coerce
from pipeline.engine import Engine
from pipeline.times import bucket_start, utc

log = logging.getLogger(__name__)

# Output columns with a fixed place in the alert; every other column goes to `context`.
_STANDARD = ("principal_arn", "resource_arn", "account_id", "region", "first_seen", "last_seen", "event_count")
_NOT_CONTEXT = frozenset({*_STANDARD, "severity"})

Progress = Callable[[Query, int], None]


def select_detections(queries: Sequence[Query], detection_ids: Iterable[str] | None = None) -> list[Query]:
    """The enabled detections, or exactly the named ones (a disabled detection runs when named)."""
    if detection_ids is None:
        return [q for q in queries if q.enabled]
    by_id = {q.id: q for q in queries}
    wanted = list(dict.fromkeys(detection_ids))
    if unknown := [i for i in wanted if i not in by_id]:
        raise ValueError(f"unknown detection(s) {', '.join(unknown)}; known: {', '.join(sorted(by_id))}")
    return [by_id[i] for i in wanted]


def check_overrides(queries: Sequence[Query], overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """Fail early (before any SQL runs) on an override for an unselected detection or an undeclared param."""
    by_id = {q.id: q for q in queries}
    for detection_id, values in overrides.items():
        if detection_id not in by_id:
            raise ValueError(f"--param for {detection_id!r}, which is not among the detections being run")
        query, params = with_window(by_id[detection_id], values)
        query.resolve_params(params)  # raises on unknown names and bad values


def with_window(query: Query, overrides: Mapping[str, Any]) -> tuple[Query, dict[str, Any]]:
    """`query` with its `window` overridden (when `overrides` has one) and the remaining overrides.

    The window is not a declared param: the engine binds it as `$window` from `query.window`, and
    `alerts_from_rows` buckets alert ids by the same value, so an override changes both alike.
    """
    params = dict(overrides)
    if "window" not in params:
        return query, params
    window = coerce("duration", params.pop("window"), where=f"{query.id}.window")
    query.check_window(window)
    return dataclasses.replace(query, window=window), params


def run_detections(
    lake: Path | str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    queries: Sequence[Query] | None = None,
    detection_ids: Iterable[str] | None = None,
    param_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    trusted_accounts: Iterable[str] = (),
    queries_dir: Path | str | None = None,
    progress: Progress | None = None,
) -> list[Alert]:
    """Findings of the selected detections over [since, until), sorted by severity (desc) then first_seen.

    `queries` is the detection catalog the caller already loaded (it also gives the outbox its re-alert
    intervals, so one run loads it once); without it, the catalog of `queries_dir` is loaded here.
    `trusted_accounts` empty means: the accounts seen as recipientAccountId in the events the run reads.
    `progress(query, findings)` is called after each detection (the CLI draws a progress bar with it).
    """
    overrides = {k: dict(v) for k, v in (param_overrides or {}).items()}
    if queries is None:
        queries = catalog.load("detections", queries_dir)
    selected = select_detections(queries, detection_ids)
    check_overrides(selected, overrides)
    if not selected:
        return []
    lookback = max(q.lookback for q in selected)
    trusted = list(trusted_accounts)
    alerts: list[Alert] = []
    with Engine.for_lake(lake, since, until, lookback=lookback) as engine:
        log.info("detect %s..%s over %d files, %d detections", since, until, len(engine.files), len(selected))
        for each in selected:
            query, params = with_window(each, overrides.get(each.id, {}))
            rows = engine.run(query, {**params, "trusted_accounts": trusted}).to_pylist()
            found = alerts_from_rows(query, rows)
            alerts.extend(found)
            log.info("%s: %d finding(s)", query.id, len(found))
            if progress is not None:
                progress(query, len(found))
    return sorted(alerts, key=alert_order)


def alerts_from_rows(query: Query, rows: Iterable[Mapping[str, Any]]) -> list[Alert]:
    """One Alert per result row (pure): dedup columns + bucket of first_seen give the deterministic id."""
    assert query.window is not None, "detections always have a window"
    alerts = []
    for row in rows:
        missing = [c for c in (*query.dedup, "first_seen", "last_seen", "event_count") if c not in row]
        if missing:
            raise ValueError(f"{query.id}: output lacks column(s) {', '.join(missing)}")
        first_seen: dt.datetime = row["first_seen"]
        severity = row.get("severity") or query.severity
        if severity not in SEVERITY_RANK:
            raise ValueError(f"{query.id}: severity {severity!r} from the SQL is not a known severity")
        dedup_values = [row[c] for c in query.dedup]
        alerts.append(
            Alert(
                alert_id=make_alert_id(query.id, dedup_values, bucket_start(first_seen, query.window)),
                detection_id=query.id,
                title=query.title,
                severity=severity,
                account_id=row.get("account_id"),
                region=row.get("region"),
                principal_arn=row.get("principal_arn"),
                resource_arn=row.get("resource_arn"),
                first_seen=utc(first_seen),
                last_seen=utc(row["last_seen"]),
                event_count=int(row["event_count"]),
                attack=query.attack,
                context={k: v for k, v in row.items() if k not in _NOT_CONTEXT},
                runbook=query.runbook,
                dedup_key=make_dedup_key(query.id, dedup_values),
            )
        )
    return alerts
