"""The findings of a run, the one way `keytrail detect`, `keytrail backtest`, `keytrail tuning check` and the
scheduled flow make them: the tuned detections over a window, each finding judged against the tuning file's
exceptions (an excepted one carries its `exception`), then named (pipeline/names) as of its time.

The caller loads the catalog and the tuning file once and passes both: the tuned catalog also gives the outbox
its re-alert intervals (`tuned_catalog`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import detect
from pipeline.alerting.alert import Alert
from pipeline.catalog import Query
from pipeline.names import resolve, table, trail
from pipeline.tuning import apply
from pipeline.tuning.model import Tuning

log = logging.getLogger(__name__)


def tuned_catalog(detections: Sequence[Query], tuning: Tuning) -> tuple[Query, ...]:
    """The catalog as the tuning file sets it up (enabled, severity, realert)."""
    return apply.tune_catalog(detections, tuning)


def find(
    lake: Path,
    since: dt.datetime,
    until: dt.datetime,
    *,
    detections: Sequence[Query],
    tuning: Tuning,
    now: dt.datetime,
    detection_ids: Iterable[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    trusted_accounts: Iterable[str] = (),
    progress: detect.Progress | None = None,
    names: bool = True,
) -> list[Alert]:
    """Findings of the (tuned) `detections` over [since, until): excepted ones included, with their `exception`;
    params from the tuning file with `overrides` (--param) on top; expiry judged as of `now`. With `names`, the
    lake's names table is brought up to date from the trail and each finding is named as of its first_seen."""
    selected = detect.select_detections(detections, detection_ids)
    params = apply.param_overrides(tuning, [q.id for q in selected], overrides)
    alerts = detect.run_detections(
        lake,
        since,
        until,
        queries=detections,
        detection_ids=[q.id for q in selected],
        param_overrides=params,
        trusted_accounts=trusted_accounts,
        progress=progress,
    )
    judged = apply.judge_findings(alerts, tuning, detections, now)
    if not names or not judged:
        return judged
    try:
        trail.sync_from_trail(lake)
    except OSError as exc:  # a read-only lake still gets the names it has: naming is never worth failing a run
        log.warning("names table of %s not updated from the trail (%s): using it as it is", lake, exc)
    return resolve.enrich(judged, resolve.NameIndex(table.read(lake)))


def paging(alerts: Iterable[Alert]) -> list[Alert]:
    """The findings no exception covers."""
    return [alert for alert in alerts if alert.exception is None]


def excepted(alerts: Iterable[Alert]) -> list[Alert]:
    return [alert for alert in alerts if alert.exception is not None]
