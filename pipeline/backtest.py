"""Backtest counting: the findings of a long detection run, per detection per day, and a comparison of two runs.

Pure: alerts in, an Arrow table out (`keytrail backtest` runs the detections and prints the table). A finding
counts on the UTC day of its `first_seen`. Because every bucket is judged against its own trailing lookback
(queries/README.md), one run over a month gives the findings the scheduled runs of that month gave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import pyarrow as pa

from pipeline.alerting.alert import Alert

TOTAL = "total"  # the `day` of a detection's total row
ALL = "all"  # the `detection` of the grand total row


def count_by_day(alerts: Iterable[Alert]) -> Counter[tuple[str, str]]:
    """(detection id, YYYY-MM-DD of first_seen) -> number of findings."""
    return Counter((a.detection_id, a.first_seen.date().isoformat()) for a in alerts)


def backtest_table(
    detection_ids: Sequence[str], baseline: Iterable[Alert], compared: Iterable[Alert] | None = None
) -> pa.Table:
    """Findings per detection per day (days with findings only), each detection's total, and the grand total.

    With `compared` (the same run with other params) the table has `compared` and `difference`
    (compared - findings) columns too, so a threshold change is judged before it ships. Every detection in
    `detection_ids` has a total row, zero included; detections appear in that order, days in date order.
    """
    base = count_by_day(baseline)
    other = count_by_day(compared) if compared is not None else None
    days = sorted({day for _, day in base} | ({day for _, day in other} if other is not None else set()))
    rows: list[tuple[str, str, int, int]] = []
    for detection_id in detection_ids:
        for day in days:
            found, again = base[(detection_id, day)], other[(detection_id, day)] if other is not None else 0
            if found or again:
                rows.append((detection_id, day, found, again))
        rows.append((detection_id, TOTAL, _total(base, detection_id), _total(other, detection_id)))
    rows.append((ALL, TOTAL, sum(base.values()), sum(other.values()) if other is not None else 0))
    columns: dict[str, pa.Array] = {
        "detection": pa.array([r[0] for r in rows], pa.string()),
        "day": pa.array([r[1] for r in rows], pa.string()),
        "findings": pa.array([r[2] for r in rows], pa.int64()),
    }
    if other is not None:
        columns["compared"] = pa.array([r[3] for r in rows], pa.int64())
        columns["difference"] = pa.array([r[3] - r[2] for r in rows], pa.int64())
    return pa.table(columns)


def _total(counts: Counter[tuple[str, str]] | None, detection_id: str) -> int:
    return sum(n for (d, _), n in counts.items() if d == detection_id) if counts is not None else 0
