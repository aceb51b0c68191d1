"""The benchmarks still run end to end (tiny sizes; the figures themselves come from `bench/`, on demand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *args: str, data: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=400,  # a hang guard: the tiny run takes ~30-60 s idle, 130 s seen on a loaded machine
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _cells(line: str) -> list[str]:
    """The cells of a row of a printed table ([] for any other line)."""
    return [cell.strip() for cell in line.split("│")[1:-1]] if line.startswith("│") else []


@pytest.mark.slow
def test_ingest_benchmark_measures_every_stage_on_the_same_corpus(tmp_path: Path) -> None:
    out = _run("ingest.py", "--events", "3000", "--events-per-day", "3000", "--repeat", "1", data=tmp_path)
    for stage in ("(a) floor", "(b) ingest w=1", "(b) ingest w=2", "(c) duckdb t=1", "(c) duckdb t=2"):
        assert stage in out
    # every stage read the same events and the two writers kept the same rows
    writers = (["(b) ingest w=1"], ["(b) ingest w=2"], ["(c) duckdb t=1"], ["(c) duckdb t=2"])
    kept = [_cells(line)[-1] for line in out.splitlines() if _cells(line)[:1] in writers]
    assert len(kept) == 4 and len(set(kept)) == 1 and kept[0] not in ("", "0"), kept
    assert "(b)/(a) per core" in out and "peak RSS of (b)" in out and "2-worker speed-up" in out
    assert list(tmp_path.glob("ingest-trail-3000-3000/.bench-complete.json"))  # the corpus is cached for reuse


@pytest.mark.slow
def test_detect_benchmark_times_both_lakes_and_the_json_peer(tmp_path: Path) -> None:
    out = _run("detect.py", "--events", "2000", "--days", "8", "--older-days", "4", "--repeat", "1", data=tmp_path)
    assert "8-day lake, median" in out and "12-day lake, median" in out
    assert "12-day lake / 8-day lake" in out and "DuckDB on raw JSON / keytrail" in out
    runs = ["8-day lake", "12-day lake", "DuckDB on raw JSON"]
    findings = [_cells(line)[-1] for line in out.splitlines() if _cells(line)[:1] in [[run] for run in runs]]
    assert len(findings) == 3 and len(set(findings)) == 1, findings  # same findings from both lakes and the peer


@pytest.mark.slow
def test_queue_drain_benchmark_drains_both_backlogs(tmp_path: Path) -> None:
    out = _run("queue_drain.py", "--events", "5", "--records", "10", "--batch-messages", "4", data=tmp_path)
    drained = {_cells(line)[0]: _cells(line)[1:4] for line in out.splitlines() if _cells(line)[:1] != []}
    # every notification of both backlogs drained, each object's 5 KMS events kept, nothing failed
    assert drained["backlog 5"] == ["5", "25", "0"] and drained["backlog 20"] == ["20", "100", "0"], drained
    assert "peak RSS, 4x backlog / 1x" in out and "peak RSS < 512 MiB at every backlog" in out
