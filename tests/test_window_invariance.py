"""Window invariance: a detection's answer does not depend on how a range is cut.

Every bucket is judged against its own trailing lookback, exactly as a scheduled run at the end of that bucket
would judge it, so one run over a range gives the same findings (alert ids and every field) as consecutive
runs of the detection's `window` over it. Checked on every detection's YAML cases, over the case's window and
over the whole span of its events (where the lookback of the first buckets is still empty).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import pytest

from pipeline import cases, catalog
from pipeline.alerting.alert import Alert
from pipeline.detect import run_detections
from pipeline.ingest import ingest
from pipeline.simulate import ALL_INCIDENTS, simulate
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


# --- a simulated trail with incidents: one run == the scheduled runs ---------------------------------------------

SIM_DAYS = 9
SIM_START = dt.date(2024, 5, 1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def trail_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 days of a simulated organization trail with every injected incident (on the last day; the evasive ones
    too: paced over hours, straddling a clock hour, replicated away, bring-your-own-key), ingested."""
    root = tmp_path_factory.mktemp("invariance")
    simulate(
        str(root / "trail"), days=SIM_DAYS, seed=11, start=SIM_START, events_per_day=2_000, incidents=ALL_INCIDENTS
    )
    lake = root / "lake"
    lake.mkdir()
    ingest(str(root / "trail"), lake)
    return lake


def _runs(lake: Path, windows: Iterable[tuple[dt.datetime, dt.datetime]]) -> set[tuple[str, str]]:
    return findings(a for since, until in windows for a in run_detections(lake, since, until))


@pytest.mark.slow
def test_one_run_over_three_days_equals_the_72_hourly_runs(trail_lake: Path) -> None:
    until = dt.datetime.combine(SIM_START + dt.timedelta(days=SIM_DAYS), dt.time(), dt.UTC)
    since = until - dt.timedelta(days=3)
    one = findings(run_detections(trail_lake, since, until))
    hourly = _runs(trail_lake, consecutive(since, until, HOUR))
    assert one, "the incidents of the last day should be found"
    assert_same(one, hourly, f"simulated trail {since}..{until} by hour")


@pytest.mark.slow
def test_one_run_over_the_whole_trail_equals_the_daily_runs(trail_lake: Path) -> None:
    """216 hourly runs are slow here: the whole trail is compared with daily runs (each judging its 24 hours
    bucket by bucket, so a day boundary is a cut like any other); the last 3 days are compared hour by hour above."""
    since = dt.datetime.combine(SIM_START, dt.time(), dt.UTC)
    until = since + dt.timedelta(days=SIM_DAYS)
    one = findings(run_detections(trail_lake, since, until))
    daily = _runs(trail_lake, consecutive(since, until, DAY))
    assert_same(one, daily, f"simulated trail {since}..{until} by day")
