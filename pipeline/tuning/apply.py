"""What a tuning does to a run (pure): the tuned catalog, the params each detection runs with, the findings an
exception covers, and the notices for exceptions that have expired."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.alerting.alert import Alert
from pipeline.catalog import Query
from pipeline.tuning.loader import tuned_query
from pipeline.tuning.matching import matching_exception
from pipeline.tuning.model import Tuning, TuningException
from pipeline.tuning.tags import detection_tags


def tune_catalog(queries: Sequence[Query], tuning: Tuning) -> tuple[Query, ...]:
    """The catalog as the tuning sets it up: `enabled`, base `severity` and `realert` per detection."""
    return tuple(tuned_query(query, tuning.detections.get(query.id)) for query in queries)


def param_overrides(
    tuning: Tuning, selected: Iterable[str], command_line: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Params per detection: the tuning file's for the `selected` detections, with `--param` values on top."""
    wanted = set(selected)
    merged = {i: dict(t.params) for i, t in tuning.detections.items() if i in wanted and t.params}
    for detection_id, values in (command_line or {}).items():
        merged[detection_id] = {**merged.get(detection_id, {}), **values}
    return merged


def judge_findings(alerts: Iterable[Alert], tuning: Tuning, queries: Sequence[Query], now: dt.datetime) -> list[Alert]:
    """`alerts` as the tuning file has them: a detection's tuned `severity` on every one of its findings (the
    SQL's own escalations included: "medium" means its alerts page as medium), and the `exception` of the first
    active exception covering each (None: it pages). Ids never change."""
    tags = {query.id: detection_tags(query) for query in queries}
    judged: list[Alert] = []
    for alert in alerts:
        own = tuning.detections.get(alert.detection_id)
        severity = own.severity if own and own.severity else alert.severity
        found = matching_exception(alert, tuning, tags.get(alert.detection_id, frozenset()), now)
        judged.append(dataclasses.replace(alert, severity=severity, exception=found.to_dict() if found else None))
    return judged


def expiry_notices(tuning: Tuning, now: dt.datetime) -> dict[str, str]:
    """One notice per expired exception (key -> message), for the outbox to say once."""
    return {_expiry_key(each): expiry_message(each) for each in tuning.expired(now)}


def _expiry_key(exception: TuningException) -> str:
    # The reference and the date: renewing an exception (a later `expires`) makes its next expiry news again.
    return f"tuning-expired:{exception.ref}:{exception.expires}"


def expiry_message(exception: TuningException) -> str:
    return (
        f"tuning exception {exception.ref} ({exception.source}, owner {exception.owner}) expired on "
        f"{exception.expires}: it no longer matches, its findings page again. Renew `expires` or remove it"
    )


def exceptions_covering(
    alerts: Iterable[Alert], tuning: Tuning, queries: Sequence[Query], now: dt.datetime
) -> dict[str, list[Alert]]:
    """Exception ref -> the findings it covers (expired exceptions included: what they would still match).
    Every exception in the file has an entry, empty when it covered nothing (stale)."""
    tags = {query.id: detection_tags(query) for query in queries}
    covered: dict[str, list[Alert]] = {each.ref: [] for each in tuning.all_exceptions()}
    for alert in alerts:
        found = matching_exception(alert, tuning, tags.get(alert.detection_id, frozenset()), now, include_expired=True)
        if found is not None:
            covered[found.ref].append(alert)
    return covered
