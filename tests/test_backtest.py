"""`keytrail backtest`: findings per detection per day over a long range, and a param change compared."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import backtest, cases, events
from pipeline.catalog import EventSpec
from pipeline.cli import app
from pipeline.detect import run_detections
from tests.trails import commit_table

UTC = dt.UTC
SPIKE = "secrets_retrieval_spike"
START = dt.datetime(2024, 5, 1, tzinfo=UTC)
# 240 reads in one hour on the 8th and on the 9th: two spikes over a steady read an hour
SPIKES = [dt.datetime(2024, 5, 8, 14, tzinfo=UTC), dt.datetime(2024, 5, 9, 3, tzinfo=UTC)]
RANGE = ["--since", "2024-05-08T00:00:00Z", "--until", "2024-05-10T00:00:00Z"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    specs = [
        EventSpec(base="secrets_get_secret_value", at=START, repeat=24 * 9, every=dt.timedelta(hours=1)),
        *(EventSpec(base="secrets_get_secret_value", at=s, repeat=240, every=dt.timedelta(seconds=15)) for s in SPIKES),
    ]
    records = cases.expand_events(specs, key="backtest-lake", default_start=START)
    path = tmp_path_factory.mktemp("backtest") / "lake"
    commit_table(path, events.normalize_many(records, source_object="test"))
    return path


def _rows(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_findings_are_counted_per_detection_per_day_with_totals(lake: Path) -> None:
    alerts = run_detections(lake, SPIKES[0] - dt.timedelta(hours=14), SPIKES[1] + dt.timedelta(hours=21))
    table = backtest.backtest_table(["kms_decrypt_volume_spike", SPIKE], alerts).to_pylist()
    assert table == [
        {"detection": "kms_decrypt_volume_spike", "day": "total", "findings": 0},
        {"detection": SPIKE, "day": "2024-05-08", "findings": 1},
        {"detection": SPIKE, "day": "2024-05-09", "findings": 1},
        {"detection": SPIKE, "day": "total", "findings": 2},
        {"detection": "all", "day": "total", "findings": 2},
    ]


def test_the_cli_prints_a_day_table_as_json(lake: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", "--lake", str(lake), *RANGE, "-d", SPIKE, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    rows = _rows(result.stdout)
    assert [(r["day"], r["findings"]) for r in rows if r["detection"] == SPIKE] == [
        ("2024-05-08", 1),
        ("2024-05-09", 1),
        ("total", 2),
    ]
    assert "compared" not in rows[0]


def test_one_backtest_equals_the_hourly_runs_it_covers(lake: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", "--lake", str(lake), *RANGE, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    (grand,) = [r for r in _rows(result.stdout) if r["detection"] == "all"]
    hours = [dt.datetime(2024, 5, 8, tzinfo=UTC) + dt.timedelta(hours=h) for h in range(48)]
    hourly = [a for h in hours for a in run_detections(lake, h, h + dt.timedelta(hours=1))]
    assert grand["findings"] == len(hourly) == 2


def test_compare_param_shows_both_columns_and_the_difference(lake: Path) -> None:
    compare = ["--compare-param", f"{SPIKE}.min_reads=1000"]
    result = CliRunner().invoke(app, ["backtest", "--lake", str(lake), *RANGE, *compare, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    rows = {(r["detection"], r["day"]): r for r in _rows(result.stdout)}
    assert rows[(SPIKE, "2024-05-08")] == {
        "detection": SPIKE,
        "day": "2024-05-08",
        "findings": 1,
        "compared": 0,
        "difference": -1,
    }
    assert (rows[(SPIKE, "total")]["findings"], rows[(SPIKE, "total")]["difference"]) == (2, -2)
    # detections without compared params count the same in both columns
    assert rows[("kms_decrypt_volume_spike", "total")]["difference"] == 0


def test_the_table_and_csv_formats(lake: Path) -> None:
    table = CliRunner().invoke(app, ["backtest", "--lake", str(lake), *RANGE, "-d", SPIKE])
    assert table.exit_code == 0, table.stderr
    assert "2024-05-09" in table.stdout and SPIKE in table.stdout
    csv = CliRunner().invoke(app, ["backtest", "--lake", str(lake), *RANGE, "-d", SPIKE, "--format", "csv"])
    assert csv.exit_code == 0, csv.stderr
    assert csv.stdout.splitlines()[0] == '"detection","day","findings"'


def test_relative_times_default_to_the_last_30_days(lake: Path) -> None:
    """The lake's data is from 2024: the last 30 days before now hold none of it."""
    result = CliRunner().invoke(app, ["backtest", "--lake", str(lake), "-d", SPIKE, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert _rows(result.stdout)[-1] == {"detection": "all", "day": "total", "findings": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare-param", "kms_decrypt_volume_spike.min_events=5", "-d", SPIKE], "not among the detections"),
        (["--compare-param", f"{SPIKE}.no_such_param=5"], "no_such_param"),
        (["--since", "-1d", "--until", "-2d"], "must be before"),
    ],
)
def test_bad_input_is_refused(lake: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["backtest", "--lake", str(lake), *args])
    assert result.exit_code != 0
    assert message in " ".join(result.stderr.split())  # rich wraps long lines
