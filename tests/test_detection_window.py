"""A detection's `window` is one knob: the buckets its SQL compares ($window) and the bucket of its alert ids.

Overriding it (`--param ID.window=2h`) changes both alike, so each finding of another bucket size keeps its own
alert id (the outbox keeps only the first alert of an id: a shared id would silently drop findings). Detections
reading their lookback from the hourly rollups take whole hours only (a 15-minute bucket is refused).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import cases, events
from pipeline.catalog import EventSpec
from pipeline.cli import app
from pipeline.detect import run_detections
from tests.trails import commit_table

UTC = dt.UTC
SPIKE = "secrets_retrieval_spike"
SINCE = dt.datetime(2024, 5, 8, 14, tzinfo=UTC)
UNTIL = SINCE + dt.timedelta(hours=4)
HOURS = [SINCE + dt.timedelta(hours=h) for h in range(4)]


@pytest.fixture(scope="module")
def reads_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A week of one secret read an hour, then 240 reads spread evenly over 14:00-18:00 on 2024-05-08."""
    specs = [
        EventSpec(
            base="secrets_get_secret_value",
            at=dt.datetime(2024, 5, 1, 0, 30, tzinfo=UTC),
            repeat=24,
            every=dt.timedelta(hours=1),
            days=7,
        ),
        EventSpec(base="secrets_get_secret_value", at=SINCE, repeat=240, every=dt.timedelta(minutes=1)),
    ]
    records = cases.expand_events(specs, key="window-lake", default_start=SINCE)
    path = tmp_path_factory.mktemp("window") / "lake"
    table = events.normalize_many(records, source_object="test")
    commit_table(path, table)
    return path


def test_the_yaml_window_buckets_the_spike(reads_lake: Path) -> None:
    (alert,) = run_detections(reads_lake, SINCE, SINCE + dt.timedelta(hours=1), detection_ids=[SPIKE])
    assert alert.first_seen == SINCE and alert.event_count == 60


# Each bucket is judged with its own lookback, which holds the buckets before it: at spike_factor 1 every bucket
# of the steady 60-read hours still beats its lookback, so all fire (each with its own id).
TWO_HOURLY = {SPIKE: {"window": "2h", "spike_factor": 1.0}}


def test_a_wider_window_gives_each_bucket_its_own_alert_id(reads_lake: Path) -> None:
    hourly = run_detections(
        reads_lake, SINCE, UNTIL, detection_ids=[SPIKE], param_overrides={SPIKE: {"spike_factor": 1}}
    )
    assert sorted(a.first_seen for a in hourly) == HOURS and all(a.event_count == 60 for a in hourly)
    found = run_detections(reads_lake, SINCE, UNTIL, detection_ids=[SPIKE], param_overrides=TWO_HOURLY)
    assert sorted(a.first_seen for a in found) == HOURS[::2]
    assert all(a.event_count == 120 for a in found)
    assert len({a.alert_id for a in found}) == len(found)


def test_the_cli_window_override_reaches_the_alert_ids(reads_lake: Path) -> None:
    window = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat(), "-d", SPIKE, "--format", "json"]
    overrides = ["--param", f"{SPIKE}.window=2h", "--param", f"{SPIKE}.spike_factor=1"]
    result = CliRunner().invoke(app, ["detect", "--lake", str(reads_lake), *window, *overrides])
    assert result.exit_code == 0, result.stderr
    ids = [json.loads(line)["alert_id"] for line in result.stdout.splitlines() if line.strip()]
    assert len(ids) == len(set(ids)) == 2


def test_each_bucket_is_judged_against_the_buckets_before_it(reads_lake: Path) -> None:
    """At the default spike_factor only 14:00-15:00 is a spike: the later hours have it in their lookback
    (the scheduled hourly runs say so too; one run over the four hours must not judge all four against the
    hours before 14:00)."""
    (alert,) = run_detections(reads_lake, SINCE, UNTIL, detection_ids=[SPIKE])
    assert alert.first_seen == SINCE and alert.event_count == 60
    hourly = [
        a.alert_id
        for start in HOURS
        for a in run_detections(reads_lake, start, start + dt.timedelta(hours=1), detection_ids=[SPIKE])
    ]
    assert hourly == [alert.alert_id]


@pytest.mark.parametrize("value", ["0s", "lots", "15m"])
def test_a_bad_window_override_is_refused(reads_lake: Path, value: str) -> None:
    with pytest.raises(ValueError, match=f"{SPIKE}.window"):
        run_detections(reads_lake, SINCE, UNTIL, detection_ids=[SPIKE], param_overrides={SPIKE: {"window": value}})
