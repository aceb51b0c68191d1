"""ingest over local folders: incremental reruns, duplicates, bad input, crash + rerun, workers, the CLI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from trails import (
    BAD_OBJECTS,
    REASONS,
    Crash,
    crash_at,
    day_of,
    glob_table,
    lake_table,
    log_bytes,
    log_key,
    record,
    write_local,
)
from typer.testing import CliRunner

from pipeline import ingest, ingest_workers
from pipeline import lake as lakelib
from pipeline.cli import app

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)


def make_trail(root: Path, days: int = 3, objects_per_day: int = 4, per_object: int = 5) -> int:
    """A folder trail; returns the number of KMS/SM events in it (each object also holds one EC2 event)."""
    wanted = 0
    for d in range(days):
        day = day_of(d)
        for o in range(objects_per_day):
            records = [
                record(f"e-{d}-{o}-{i}", f"{day}T{10 + o:02d}:{i:02d}:00Z", "GetSecretValue" if i % 2 else "Decrypt")
                for i in range(per_object)
            ]
            records.append(record(f"ec2-{d}-{o}", f"{day}T10:00:00Z", "RunInstances"))
            wanted += per_object
            write_local(root, log_key(day, f"{day:%Y%m%d}T{o:02d}00Z_{o:016d}"), log_bytes(records))
    return wanted


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, int]:
    root = tmp_path / "trail"
    return root, make_trail(root)


def test_ingest_keeps_kms_and_secrets_events_once_and_rerun_is_a_noop(trail, lake: Path) -> None:
    root, wanted = trail
    first = ingest.ingest(str(root), lake, now=NOW)
    assert (first.objects_listed, first.objects_read, first.objects_skipped) == (12, 12, 0)
    assert first.events_seen == wanted + 12 and first.events_kept == wanted and first.events_duplicate == 0
    table = lake_table(lake)
    assert table.num_rows == wanted
    assert set(table.column("event_source").to_pylist()) == {"kms.amazonaws.com", "secretsmanager.amazonaws.com"}
    # a few files per partition per run, not one per object
    assert len(lakelib.committed_files(lake)) == 3 and first.files_written == 3
    files_before = sorted(lakelib.events_dir(lake).rglob("*"))

    second = ingest.ingest(str(root), lake, now=NOW)
    assert (second.objects_read, second.objects_skipped, second.bytes_read, second.files_written) == (0, 12, 0, 0)
    assert sorted(lakelib.events_dir(lake).rglob("*")) == files_before
    # only the new object is read on the next run
    write_local(root, log_key(day_of(1), "20240502T2300Z_new"), log_bytes([record("new-1", "2024-05-02T23:00:00Z")]))
    third = ingest.ingest(str(root), lake, now=NOW)
    assert (third.objects_read, third.objects_skipped, third.events_kept) == (1, 12, 1)
    assert lake_table(lake).num_rows == wanted + 1


def test_same_event_id_twice_is_stored_once_in_a_run_and_across_runs(tmp_path: Path, lake: Path) -> None:
    root = tmp_path / "trail"
    day = day_of(0)
    write_local(
        root, log_key(day, "a"), log_bytes([record("dup", f"{day}T01:00:00Z"), record("x", f"{day}T01:00:00Z")])
    )
    write_local(
        root, log_key(day, "b"), log_bytes([record("dup", f"{day}T01:00:00Z"), record("dup", f"{day}T01:00:00Z")])
    )
    report = ingest.ingest(str(root), lake, now=NOW)
    assert (report.events_kept, report.events_duplicate) == (2, 2)
    # a later object re-delivering a committed event (even under another date) is dropped at commit
    write_local(
        root,
        log_key(day_of(5), "c"),
        log_bytes([record("dup", f"{day_of(5)}T01:00:00Z"), record("y", f"{day_of(5)}T02:00:00Z")]),
    )
    later = ingest.ingest(str(root), lake, now=NOW)
    assert (later.events_kept, later.events_duplicate) == (1, 1)
    ids = lake_table(lake).column("event_id").to_pylist()
    assert sorted(ids) == ["dup", "x", "y"]
    ledger = {entry.key.rsplit("_", 1)[-1]: entry for rec in lakelib.read_ledger(lake) for entry in rec.objects}
    assert (ledger["c.json.gz"].events_kept, ledger["c.json.gz"].events_duplicate) == (1, 1)


def write_bad_trail(root: Path) -> None:
    day = day_of(0)
    for name, data in BAD_OBJECTS.items():
        write_local(root, log_key(day, name), data)
    mixed = [
        record("good-1", f"{day}T01:00:00Z"),
        record("wrong-type", f"{day}T01:00:01Z", userIdentity="not-an-object"),
        record("bad-time", "yesterday"),
        record("good-2", f"{day}T01:00:02Z", "GetSecretValue"),
    ]
    write_local(root, log_key(day, "mixed"), log_bytes(mixed))


def test_bad_input_is_quarantined_reported_and_nothing_is_lost(tmp_path: Path, lake: Path) -> None:
    root = tmp_path / "trail"
    write_bad_trail(root)
    report = ingest.ingest(str(root), lake, now=NOW)
    assert report.objects_quarantined == len(BAD_OBJECTS) and report.objects_read == 1
    assert report.events_rejected == 2 and report.events_kept == 2 and report.quarantined_anything
    by_name = {Path(entry.source).name.split("_")[-1].removesuffix(".json.gz"): entry for entry in report.quarantine}
    for name, data in BAD_OBJECTS.items():
        entry = by_name[name]
        assert REASONS[name] in entry.reason, (name, entry.reason)
        kept = lake / entry.path
        assert kept.read_bytes() == data  # verbatim
        reason = json.loads(kept.with_name(kept.name + ".reason.json").read_text())
        assert REASONS[name] in reason["reason"] and reason["key"].endswith(f"{name}.json.gz")
    rejected = [json.loads(line) for line in (lake / by_name["mixed"].path).read_text().splitlines()]
    assert [(r["index"], json.loads(r["record"])["eventID"]) for r in rejected] == [(1, "wrong-type"), (2, "bad-time")]
    assert "userIdentity" in rejected[0]["reason"] and "eventTime" in rejected[1]["reason"]
    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["good-1", "good-2"]

    # the rerun skips them (they are in the ledger); a re-read of still-bad content does not add entries
    entries_before = sorted(p.name for p in lakelib.quarantine_dir(lake).rglob("*"))
    assert ingest.ingest(str(root), lake, now=NOW).objects_skipped == len(BAD_OBJECTS) + 1
    for path in root.rglob("*.json.gz"):  # touched: new fingerprint, same content
        path.touch()
        path.write_bytes(path.read_bytes())
    again = ingest.ingest(str(root), lake, now=NOW)
    assert again.objects_quarantined == len(BAD_OBJECTS) and again.events_duplicate == 2
    assert sorted(p.name for p in lakelib.quarantine_dir(lake).rglob("*")) == entries_before


def test_crash_after_some_objects_then_rerun_gives_the_clean_lake(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "trail"
    make_trail(root)
    clean = tmp_path / "clean"
    ingest.ingest(str(root), clean, now=NOW)
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 12)  # several batches: some commit before the crash
    for stage in ("object:1", "object:7", "files-published"):
        crashed = tmp_path / f"crashed-{stage}"
        with pytest.raises(Crash):
            ingest.ingest(str(root), crashed, now=NOW, checkpoint=crash_at(stage))
        assert lake_table(crashed).num_rows < lake_table(clean).num_rows
        rerun = ingest.ingest(str(root), crashed, now=NOW)
        assert rerun.objects_read + sum(len(r.objects) for r in lakelib.read_ledger(crashed)) >= 12
        assert lake_table(crashed).equals(lake_table(clean)), stage
        assert glob_table(crashed).equals(lake_table(clean)), stage  # no orphan left for glob readers
        assert not list((crashed / "_staging").iterdir())


def test_a_killed_process_leaves_nothing_visible_after_recovery(tmp_path: Path) -> None:
    root = tmp_path / "trail"
    make_trail(root, days=2, objects_per_day=2)
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    script = textwrap.dedent(
        f"""
        import os, datetime as dt
        from pathlib import Path
        from pipeline import ingest
        def die(stage):
            if stage == "files-published":
                os._exit(9)  # a hard kill between publishing files and the ledger record
        ingest.ingest({str(root)!r}, Path({str(crashed)!r}), checkpoint=die)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    assert glob_table(crashed).num_rows > 0  # a plain glob sees the orphan files before recovery ...
    assert lake_table(crashed).num_rows == 0  # ... the engine's file list does not
    assert lakelib.recover(crashed) >= 1
    assert glob_table(crashed).num_rows == 0
    ingest.ingest(str(root), crashed, now=NOW)
    ingest.ingest(str(root), clean, now=NOW)
    assert lake_table(crashed).equals(lake_table(clean))


def test_workers_give_the_same_lake_as_one_process(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "trail"
    make_trail(root, days=2, objects_per_day=6)
    # a duplicate across objects: the copy listed first must win whatever the worker timing
    write_local(root, log_key(day_of(0), "zz"), log_bytes([record("e-0-0-0", "2024-05-01T23:59:00Z", "Encrypt")]))
    monkeypatch.setattr(ingest_workers, "MIN_BYTES_PER_WORKER", 1)
    one, two = tmp_path / "one", tmp_path / "two"
    ingest.ingest(str(root), one, now=NOW, workers=1)
    report = ingest.ingest(str(root), two, now=NOW, workers=2)
    assert report.events_duplicate == 1
    assert lake_table(two).equals(lake_table(one))
    names = dict(zip(*lake_table(two).select(["event_id", "event_name"]).to_pydict().values(), strict=True))
    assert names["e-0-0-0"] == "Decrypt"


def test_progress_reports_objects_and_bytes(trail, lake: Path) -> None:
    root, _ = trail
    calls: list[tuple[int, int, int, int]] = []
    ingest.ingest(str(root), lake, now=NOW, progress=lambda *args: calls.append(args))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] == 12
    assert calls[-1][2] == calls[-1][3] == sum(p.stat().st_size for p in root.rglob("*.json.gz"))


def test_cli_ingest_summary_and_exit_codes(tmp_path: Path, lake: Path) -> None:
    root = tmp_path / "trail"
    make_trail(root, days=1, objects_per_day=2)
    runner = CliRunner()
    ok = runner.invoke(app, ["ingest", str(root), "--lake", str(lake), "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    assert "events kept" in ok.output and "10" in ok.output
    write_bad_trail(root)
    bad = runner.invoke(app, ["ingest", str(root), "--lake", str(lake), "--workers", "1"])
    assert bad.exit_code == 3, bad.output
    assert "quarantined" in bad.output
    empty = runner.invoke(app, ["ingest", str(root), "--lake", str(lake), "--since", "2030-01-01"])
    assert empty.exit_code == 0 and "nothing found under" in empty.output
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--lake", str(lake)])
    assert missing.exit_code == 1 and "is not a folder" in " ".join(missing.output.split())
    wrong_date = runner.invoke(app, ["ingest", str(root), "--lake", str(lake), "--since", "May 1"])
    assert wrong_date.exit_code == 2 and "YYYY-MM-DD" in " ".join(wrong_date.output.split())


def test_cli_compact_merges_every_partition(trail, lake: Path) -> None:
    root, _ = trail
    ingest.ingest(str(root), lake, now=NOW)
    for d in range(3):  # a second run adds a file to each partition
        write_local(root, log_key(day_of(d), "late"), log_bytes([record(f"late-{d}", f"{day_of(d)}T00:00:00Z")]))
    ingest.ingest(str(root), lake, now=NOW)
    before = lake_table(lake)
    assert len(lakelib.committed_files(lake)) == 6
    result = CliRunner().invoke(app, ["compact", "--lake", str(lake)])
    assert result.exit_code == 0, result.output
    assert len(lakelib.committed_files(lake)) == 3
    assert lake_table(lake).equals(before)
    times = pq.read_table(lakelib.committed_files(lake)[0]).column("event_time").to_pylist()
    assert times == sorted(times)


def test_concurrent_ingests_leave_the_gc_thresholds_as_they_were() -> None:
    """Flow tasks ingest day chunks on several threads. With the first thread in also the first out, a
    save/restore per thread would leave ingest's thresholds set for good; the process's own must come back."""
    import gc
    import threading

    before = gc.get_threshold()
    first_in, second_in, first_may_leave, second_may_leave = (threading.Event() for _ in range(4))

    def ingest_like(entered: threading.Event, may_leave: threading.Event) -> None:
        with ingest_workers.few_collections():
            entered.set()
            may_leave.wait(5)

    first = threading.Thread(target=ingest_like, args=(first_in, first_may_leave))
    second = threading.Thread(target=ingest_like, args=(second_in, second_may_leave))
    first.start()
    first_in.wait(5)
    second.start()
    second_in.wait(5)
    first_may_leave.set()
    first.join()
    assert gc.get_threshold() != before  # the second chunk is still ingesting
    second_may_leave.set()
    second.join()
    assert gc.get_threshold() == before
