"""The lake: atomic batches, recovery, concurrent writers, global event_id uniqueness, ranges, compaction."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trails import Crash, crash_at, glob_table, lake_table, record

from pipeline import events
from pipeline import lake as lakelib
from pipeline.lake import ids as lake_ids
from pipeline.lake import layout
from pipeline.s3 import LogObject

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)


def batch(ids: list[str], day: str = "2024-05-01", hour: int = 10) -> pa.RecordBatch:
    rows = [record(event_id, f"{day}T{hour:02d}:{i % 60:02d}:{i % 7:02d}Z") for i, event_id in enumerate(ids)]
    return events.normalize_many(rows, "s3://bucket/key").to_batches()[0]


def entry(key: str) -> lakelib.ObjectEntry:
    return lakelib.ObjectEntry(bucket="bucket", key=key, etag="e", size=1)


def source(key: str) -> LogObject:
    """A source object whose rows are `batch(...)`'s (their source_object is s3://bucket/key)."""
    return LogObject(source="s3://bucket/key", bucket="bucket", key=key, etag="e", size=1)


def write_batch(lake: Path, ids: list[str], day: str = "2024-05-01", checkpoint=None) -> lakelib.BatchRecord:
    with lakelib.BatchWriter(lake, NOW) as writer:
        writer.add(batch(ids, day), [(source(f"k-{ids[0]}"), len(ids))])
        return writer.commit(checkpoint)


def test_a_committed_batch_is_visible_with_its_ledger_record(lake: Path) -> None:
    record_ = write_batch(lake, ["a", "b", "c"])
    (path,) = lakelib.committed_files(lake)
    assert path.parent.name == "event_date=2024-05-01" and path.name.startswith(record_.batch_id)
    metadata = pq.ParquetFile(path).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_schema(path).remove_metadata().equals(events.EVENTS_SCHEMA.remove_metadata())
    (ledger,) = lakelib.read_ledger(lake)
    assert ledger.files[0].rows == 3 and ledger.objects[0].key == "k-a"
    assert ledger.committed_at == "2024-06-01T12:00:00Z"  # times.iso: UTC with Z
    assert lakelib.ingested_objects(lake) == {("bucket", "k-a", "e")}
    assert not list((lake / "_ledger" / "intents").iterdir())


@pytest.mark.parametrize("stage", ["files-published", "ledger-written"])
def test_a_crash_inside_commit_is_invisible_to_the_engine_and_repaired(lake: Path, stage: str) -> None:
    write_batch(lake, ["a"])
    with pytest.raises(Crash):
        write_batch(lake, ["b", "c"], day="2024-05-02", checkpoint=crash_at(stage))
    committed = stage == "ledger-written"
    assert lake_table(lake).num_rows == (3 if committed else 1)  # the engine never sees half a batch
    assert glob_table(lake).num_rows == 3  # a plain glob does, until recovery
    assert lakelib.recover(lake) == 2  # the intent and the dead writer's staging
    assert glob_table(lake).num_rows == lake_table(lake).num_rows == (3 if committed else 1)
    assert lakelib.recover(lake) == 0
    assert not list((lake / "_staging").iterdir())


def test_recover_leaves_a_live_writer_alone_and_concurrent_writers_both_commit(lake: Path) -> None:
    errors: list[BaseException] = []
    with lakelib.BatchWriter(lake, NOW) as slow:
        slow.add(batch(["s1", "s2"], "2024-05-03"), [(source("slow"), 2)])
        slow._staged()  # its files are on disk in staging now
        assert lakelib.recover(lake) == 0 and any(slow.staging.rglob("*.parquet"))

        def other(day: str, prefix: str) -> None:
            try:
                write_batch(lake, [f"{prefix}{i}" for i in range(50)], day)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=other, args=(f"2024-05-0{d}", f"t{d}-")) for d in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        slow.commit()
    assert errors == []
    ids = lake_table(lake).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == 102
    assert len(list(lakelib.read_ledger(lake))) == 3


def test_event_ids_are_unique_across_batches_and_partitions(lake: Path, monkeypatch) -> None:
    monkeypatch.setattr(lake_ids, "_ID_CHUNK", 2)  # several probe chunks over the id index
    write_batch(lake, ["a", "b"])
    write_batch(lake, ["c", "d"], day="2024-05-02")
    with lakelib.BatchWriter(lake, NOW) as writer:
        late = source("late")
        assert writer.add(batch(["a", "x", "x"], "2024-05-09"), [(late, 3)]) == (2, 1)  # in-batch duplicate
        assert writer.add(batch(["d", "y"], "2024-05-09"), [(late, 2)]) == (2, 0)
        record_ = writer.commit()
    assert (record_.events_kept, record_.events_duplicate) == (2, 3)  # a and d were committed already
    assert (record_.objects[0].events_kept, record_.objects[0].events_duplicate) == (2, 3)
    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["a", "b", "c", "d", "x", "y"]
    assert lakelib.committed_duplicates(lake, pa.array(["a", "zz", "y"])) == {"a", "y"}


def test_the_writer_keeps_every_objects_ledger_entry(lake: Path) -> None:
    """The writer alone accounts for source objects: kept/duplicate rows per run, records seen and rejected,
    unreadable objects; the record's totals are the sums of the entries."""
    first, empty, second, bad = (LogObject(f"s3://bucket/{k}", "bucket", k, "e", 9) for k in ("1", "2", "3", "4"))
    rows = [
        events.normalize_many([record(i, f"2024-05-01T10:00:0{n}Z") for n, i in enumerate(ids)], obj.source)
        for obj, ids in ((first, ["a", "b", "a"]), (second, ["b", "c"]))
    ]
    both = pa.concat_tables(rows).combine_chunks().to_batches()[0]
    rejected = [events.RejectedRecord(0, "eventTime: not a time", b'{"eventID": "r"}')]
    with lakelib.BatchWriter(lake, NOW) as writer:
        assert writer.empty
        assert writer.add(both, [(first, 3), (empty, 0), (second, 2)]) == (3, 2)
        with pytest.raises(ValueError, match="the runs name 3 rows but the batch has 5"):
            writer.add(both, [(first, 3)])
        assert writer.record_read(first, seen=5) is None
        writer.record_read(empty, seen=4)  # only other services' events
        kept_at = writer.record_read(second, seen=3, rejected=rejected)
        unreadable_at = writer.record_unreadable(bad, "corrupt gzip", b"xx")
        assert writer.rows == 3 and not writer.empty
        record_ = writer.commit()
    counts = [
        (e.key, e.status, e.events_seen, e.events_kept, e.events_duplicate, e.events_rejected, e.reason)
        for e in record_.objects
    ]
    assert counts == [
        ("1", "ingested", 5, 2, 1, 0, None),
        ("2", "ingested", 4, 0, 0, 0, None),
        ("3", "ingested", 3, 1, 1, 1, None),
        ("4", "quarantined", 0, 0, 0, 0, "corrupt gzip"),
    ]
    assert (record_.events_kept, record_.events_duplicate) == (3, 2)
    assert unreadable_at.read_bytes() == b"xx" and record_.objects[3].quarantined
    assert kept_at is not None and json.loads(kept_at.read_text())["reason"] == "eventTime: not a time"
    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["a", "b", "c"]
    assert list(lakelib.read_ledger(lake)) == [record_]


def test_committed_files_lists_only_the_range(lake: Path, monkeypatch) -> None:
    for day in ("2024-04-30", "2024-05-01", "2024-05-02", "2024-06-01"):
        write_batch(lake, [f"id-{day}"], day)
    days = [p.parent.name[-10:] for p in lakelib.committed_files(lake, dt.date(2024, 5, 1), dt.date(2024, 5, 31))]
    assert days == ["2024-05-01", "2024-05-02"]
    assert len(lakelib.committed_files(lake, dt.date(2024, 5, 2))) == 2
    assert len(lakelib.committed_files(lake, None, dt.date(2024, 4, 30))) == 1
    assert lakelib.committed_files(lake, dt.date(2024, 5, 3), dt.date(2024, 5, 1)) == []
    scanned: list[str] = []
    real_scandir = layout.os.scandir
    monkeypatch.setattr(layout.os, "scandir", lambda path: scanned.append(str(path)) or real_scandir(path))
    lakelib.committed_files(lake, dt.date(2024, 5, 1), dt.date(2024, 5, 1))
    # a closed range probes its own partition folders, never lists the whole lake's partitions
    assert str(lakelib.events_dir(lake)) not in scanned
    assert all("event_date=" not in path or "2024-05-01" in path for path in scanned)


def test_compact_keeps_rows_and_leaves_one_sorted_file(lake: Path) -> None:
    for hour in (15, 9, 12):  # three batches, out of time order
        with lakelib.BatchWriter(lake, NOW) as writer:
            writer.add(batch([f"h{hour}-{i}" for i in range(30)], hour=hour), [(source(f"k{hour}"), 30)])
            writer.commit()
    before = lake_table(lake)
    report = lakelib.compact(lake, dt.date(2024, 5, 1), now=NOW)
    assert (report.files_before, report.files_after, report.rows) == (3, 1, 90)
    (path,) = lakelib.committed_files(lake)
    assert path == report.path
    times = pq.read_table(path).column("event_time").to_pylist()
    assert times == sorted(times)
    assert lake_table(lake).equals(before)
    assert glob_table(lake).equals(before)
    assert [r.kind for r in lakelib.read_ledger(lake)].count("compact") == 1
    again = lakelib.compact(lake, dt.date(2024, 5, 1), now=NOW)
    assert (again.files_before, again.files_after, again.path) == (1, 1, None)


@pytest.mark.parametrize("stage", ["files-published", "ledger-written"])
def test_a_crash_during_compaction_never_changes_what_readers_see(lake: Path, stage: str) -> None:
    write_batch(lake, ["a", "b"])
    write_batch(lake, ["c"])
    before = lake_table(lake)
    with pytest.raises(Crash):
        lakelib.compact(lake, dt.date(2024, 5, 1), now=NOW, checkpoint=crash_at(stage))
    assert lake_table(lake).equals(before)  # old files until the commit point, the new one after
    lakelib.recover(lake)
    assert lake_table(lake).equals(before) and glob_table(lake).equals(before)
    assert len(lakelib.committed_files(lake)) == (1 if stage == "ledger-written" else 2)


def test_quarantine_entries_are_named_by_object_and_content(lake: Path) -> None:
    first = lakelib.quarantine_object(lake, entry("AWSLogs/x/bad.json.gz"), "s3://bucket/AWSLogs/x/bad.json.gz", b"xx")
    touched = lakelib.ObjectEntry(bucket="bucket", key="AWSLogs/x/bad.json.gz", etag="other", size=2)
    assert lakelib.quarantine_object(lake, touched, "s3://bucket/AWSLogs/x/bad.json.gz", b"xx") == first
    other = lakelib.quarantine_object(lake, entry("AWSLogs/x/bad.json.gz"), "s3://bucket/AWSLogs/x/bad.json.gz", b"yy")
    assert other != first and first.read_bytes() == b"xx"
    assert len(list((lake / "quarantine" / "objects").iterdir())) == 4  # two objects + two reason files


@pytest.mark.parametrize(
    "key",
    [
        "AWSLogs/1/CloudTrail/us-east-1/2024/05/01/" + "a" * 240 + ".json.gz",
        "../../../etc/passwd",
        "/abs/../../..",
        "..",
        "",
        "dir/ends-with/",
        "x\x00y\n\x1b[2J\u202e[/bold]:secret:",
        "AWSLogs/" + "é" * 300,
        "a/" + "\\..\\..\\windows",
    ],
)
def test_quarantine_names_fit_the_filesystem_and_stay_inside_quarantine(lake: Path, key: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~")
    kept = lakelib.quarantine_object(lake, entry(key), f"s3://bucket/{key}", b"xx")
    rejected = [events.RejectedRecord(0, "wrong field type", b'{"eventID": "r"}')]
    records = lakelib.quarantine_records(lake, entry(key), f"s3://bucket/{key}", rejected)
    assert kept.parent == lake / "quarantine" / "objects" and records.parent == lake / "quarantine" / "records"
    written = [path for path in (lake / "quarantine").rglob("*") if path.is_file()]
    assert len(written) == 3
    for path in written:
        assert len(path.name.encode()) <= 120 and set(path.name) <= allowed, path.name
        assert not path.name.startswith(".")
    reason = json.loads(kept.with_name(kept.name + ".reason.json").read_text())
    assert (reason["key"], reason["source"]) == (key, f"s3://bucket/{key}")
    assert json.loads(records.read_text())["key"] == key
    assert kept.read_bytes() == b"xx"


def test_quarantine_names_keep_a_readable_part_of_the_key(lake: Path) -> None:
    name = "123837392027_CloudTrail_ap-southeast-2_20230710T1142Z_0123456789abcdef.json.gz"
    kept = lakelib.quarantine_object(lake, entry(f"AWSLogs/x/{name}"), "s3://bucket/x", b"xx")
    assert name in kept.name
    long = lakelib.quarantine_object(lake, entry("AWSLogs/x/" + "b" * 200 + ".json.gz"), "s3://bucket/y", b"xx")
    assert long.name.endswith(".json.gz") and "bbbbbbbbbbbbbbbb" in long.name
