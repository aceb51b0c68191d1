"""Window invariance: a detection's answer does not depend on how a range is cut.

Every bucket is judged against its own trailing lookback, exactly as a scheduled run at the end of that bucket
would judge it, so one run over a range gives the same findings (alert ids and every field) as consecutive
runs of the detection's `window` over it. Checked on every detection's YAML cases, over the case's window and
over the whole span of its events (where the lookback of the first buckets is still empty).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pytest

from pipeline import cases, catalog
from pipeline.alerting.alert import Alert
from pipeline.times import bucket_start

DAY = dt.timedelta(days=1)
DETECTION_CASES = [(q, c) for q in catalog.load("detections") for c in q.tests]


def consecutive(since: dt.datetime, until: dt.datetime, width: dt.timedelta) -> list[tuple[dt.datetime, dt.datetime]]:
    """[since, until) cut into `width` windows aligned like the detection's buckets, as scheduled runs cover it."""
    windows = []
    start = bucket_start(since, width)
    while start < until:
        windows.append((max(start, since), min(start + width, until)))
        start += width
    return windows


def findings(alerts: Iterable[Alert]) -> set[tuple[str, str]]:
    """Each alert as (alert_id, all its fields): equal sets mean the same ids with the same content."""
    return {(a.alert_id, a.to_json()) for a in alerts}


def _describe(only: set[tuple[str, str]]) -> str:
    return "\n".join(f"    {text}" for _, text in sorted(only)) or "    (none)"


def assert_same(one: set[tuple[str, str]], split: set[tuple[str, str]], what: str) -> None:
    assert one == split, (
        f"{what}: one run and consecutive runs disagree\n  only in the one run:\n{_describe(one - split)}"
        f"\n  only in the consecutive runs:\n{_describe(split - one)}"
    )


@pytest.mark.parametrize(("query", "case"), DETECTION_CASES, ids=[f"{q.id}::{c.name}" for q, c in DETECTION_CASES])
def test_a_case_window_gives_the_same_findings_split_and_unsplit(query: catalog.Query, case: catalog.Case) -> None:
    assert query.window is not None
    given = cases.case_input(query, case)
    whole = findings(cases.case_alerts(query, given, [(given.since, given.until)]))
    split = findings(cases.case_alerts(query, given, consecutive(given.since, given.until, query.window)))
    assert_same(whole, split, f"{query.id} / {case.name} over {given.since}..{given.until}")


@pytest.mark.parametrize(("query", "case"), DETECTION_CASES, ids=[f"{q.id}::{c.name}" for q, c in DETECTION_CASES])
def test_the_whole_span_of_a_case_gives_the_same_findings_split_and_unsplit(
    query: catalog.Query, case: catalog.Case
) -> None:
    """From the bucket of the first event to the case's end, cut into days (hundreds of hourly or 10-minute runs
    per case would be slow; tests/test_window_invariance.py's simulated trail compares hourly runs)."""
    assert query.window is not None
    given = cases.case_input(query, case)
    times = given.table.column("event_time").to_pylist()
    since = bucket_start(min([*times, given.since]), query.window)
    until = max(given.until, bucket_start(max([*times, given.since]), query.window) + query.window)
    whole = findings(cases.case_alerts(query, given, [(since, until)]))
    split = findings(cases.case_alerts(query, given, consecutive(since, until, DAY)))
    assert_same(whole, split, f"{query.id} / {case.name} over {since}..{until} by day")
