"""The ingest failure model: a bad record, a bad object, a fault of the run (pipeline/ingest_failures.py).

Each test is one way hostile or broken input used to stop a whole run (nothing committed for any object), or a
run fault that was reported wrongly. The fuzzing suite (test_ingest_fuzz.py) checks the same invariants on
generated input; these pin the named cases.
"""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import json
import os
import re
from pathlib import Path

import pytest
from trails import day_of, lake_table, log_bytes, log_key, record, write_local
from typer.testing import CliRunner

from pipeline import ingest, ingest_workers
from pipeline import lake as lakelib
from pipeline.cli import app

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = day_of(0)
MARK = "QQMARKQQ"


def with_raw(records: list[dict], raw: bytes) -> bytes:
    """A gzipped log object whose JSON has `raw` spliced in where a record holds the text MARK."""
    return gzip.compress(json.dumps({"Records": records}).encode().replace(f'"{MARK}"'.encode(), raw), mtime=0)


def deep(levels: int) -> bytes:
    return b'{"a": ' * levels + b"1" + b"}" * levels


def good_object(root: Path, name: str = "good") -> Path:
    return write_local(root, log_key(DAY, name), log_bytes([record(f"{name}-1", f"{DAY}T01:00:00Z")]))


def cli_ingest(root: Path, lake: Path):
    """`keytrail ingest` on a wide terminal, so no table cell is folded in the middle of a word."""
    return CliRunner().invoke(app, ["ingest", str(root), "--lake", str(lake), "--workers", "1"], env={"COLUMNS": "400"})


def all_lake_bytes(lake: Path) -> list[bytes]:
    return [path.read_bytes() for path in lake.rglob("*") if path.is_file()]


def quarantined(report: ingest.IngestReport, lake: Path) -> dict[str, dict]:
    """The reason files of the quarantined objects, by the last part of their key."""
    found = {}
    for path in (lakelib.quarantine_dir(lake) / "objects").glob("*.reason.json"):
        reason = json.loads(path.read_text())
        found[reason["key"].rsplit("/", 1)[-1]] = reason
    return found


def test_invalid_utf8_in_a_string_field_rejects_that_record_only(tmp_path: Path, lake: Path) -> None:
    """msgspec raises UnicodeDecodeError (not a DecodeError) for invalid UTF-8 in a field it decodes as str:
    it used to escape and stop the run, even when the record belonged to a service keytrail does not keep."""
    root = tmp_path / "trail"
    good_object(root)
    mixed = [
        record("kms-bad-agent", f"{DAY}T01:00:00Z", userAgent=MARK),
        record("ec2-bad-agent", f"{DAY}T01:00:01Z", "RunInstances", userAgent=MARK),
        record("kms-fine", f"{DAY}T01:00:02Z"),
        record("sm-bad-source", f"{DAY}T01:00:03Z", "GetSecretValue", eventSource=MARK),
    ]
    write_local(root, log_key(DAY, "mixed"), with_raw(mixed, b'"bad \xff\xfe utf-8"'))
    write_local(root, log_key(DAY, "other-only"), with_raw(mixed[1:2], b'"\xc3\x28"'))

    report = ingest.ingest(str(root), lake, now=NOW)

    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["good-1", "kms-fine"]
    assert (report.objects_read, report.objects_quarantined) == (3, 0)
    assert (report.events_seen, report.events_rejected) == (6, 2)  # the EC2 record is not ours: seen, not kept
    (records_file,) = (lakelib.quarantine_dir(lake) / "records").glob("*.jsonl")
    rejected = [json.loads(line) for line in records_file.read_text().splitlines()]
    assert [r["index"] for r in rejected] == [0, 3]
    assert all("UTF-8" in r["reason"] or "utf-8" in r["reason"] for r in rejected)
    assert ingest.ingest(str(root), lake, now=NOW).objects_read == 0


def test_json_nested_thousands_of_levels_deep_rejects_that_record_only(tmp_path: Path, lake: Path) -> None:
    """The decoders recurse: a record nested deeper than the recursion limit raised RecursionError out of the
    run. The records beside it are still read (the log is split without recursing)."""
    root = tmp_path / "trail"
    good_object(root)
    mixed = [
        record("kms-deep", f"{DAY}T01:00:00Z", requestParameters=MARK),
        record("kms-fine", f"{DAY}T01:00:01Z"),
        record("ec2-deep", f"{DAY}T01:00:02Z", "RunInstances", requestParameters=MARK),
        record("sm-fine", f"{DAY}T01:00:03Z", "GetSecretValue"),
    ]
    write_local(root, log_key(DAY, "deep"), with_raw(mixed, deep(5000)))
    write_local(root, log_key(DAY, "deep-array"), gzip.compress(b'{"Records": [' + deep(5000) + b"]}"))

    report = ingest.ingest(str(root), lake, now=NOW)

    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["good-1", "kms-fine", "sm-fine"]
    # a record too deep to read its service is kept aside too: it could be a KMS event
    assert (report.objects_quarantined, report.events_rejected) == (0, 3)
    reasons = [
        json.loads(line)["reason"]
        for path in (lakelib.quarantine_dir(lake) / "records").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(reasons) == 3 and all("nested" in reason for reason in reasons)
    assert ingest.ingest(str(root), lake, now=NOW).objects_read == 0


def test_a_corrupt_object_with_a_240_character_name_is_quarantined(tmp_path: Path, lake: Path) -> None:
    """Its quarantine name used to be a digest plus the whole file name: past NAME_MAX (Errno 36), and the CLI
    then blamed --lake."""
    root = tmp_path / "trail"
    good_object(root)
    name = "a" * 232 + ".json.gz"
    bad = write_local(root, str(Path(log_key(DAY, "x")).parent / name), b"\x1f\x8bnot really gzip")

    report = ingest.ingest(str(root), lake, now=NOW)

    assert (report.objects_read, report.objects_quarantined) == (1, 1)
    (entry,) = report.quarantine
    kept = lake / entry.path
    assert kept.read_bytes() == bad.read_bytes() and len(kept.name.encode()) <= 120
    assert all(len(path.name.encode()) <= 120 for path in lakelib.quarantine_dir(lake).rglob("*"))
    assert quarantined(report, lake)[name]["source"] == str(bad)


def test_a_dangling_symlink_is_a_bad_object(tmp_path: Path, lake: Path) -> None:
    root = tmp_path / "trail"
    good_object(root)
    link = root / log_key(DAY, "dangling")
    link.symlink_to(root / "gone.json.gz")
    out = root / log_key(DAY, "dangling-out")
    out.symlink_to(tmp_path / "nowhere.json.gz")

    report = ingest.ingest(str(root), lake, now=NOW)

    assert (report.objects_read, report.objects_quarantined, report.events_kept) == (1, 2, 1)
    reasons = quarantined(report, lake)
    assert reasons[link.name]["source"] == str(link) and "ENOENT" in reasons[link.name]["reason"]
    assert "outside" in reasons[out.name]["reason"]
    assert ingest.ingest(str(root), lake, now=NOW).objects_read == 0


def test_symlinks_are_never_followed_out_of_the_source(tmp_path: Path, lake: Path) -> None:
    """A symlink to a file outside the source got that file copied verbatim into quarantine/objects/."""
    root = tmp_path / "trail"
    good_object(root)
    secret = tmp_path / "outside" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- not a log")
    link = root / log_key(DAY, "to-secret")
    link.symlink_to(secret)
    # a whole day folder linked out of the source: its files are outside too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shadow.json.gz").write_bytes(b"root:$6$secret-hash")
    day_folder = (root / log_key(day_of(1), "x")).parent
    day_folder.parent.mkdir(parents=True, exist_ok=True)
    day_folder.symlink_to(elsewhere, target_is_directory=True)
    # a symlink that stays inside the source is read like the file it points to
    spare = write_local(root, "spare/kept.json.gz", log_bytes([record("via-link", f"{DAY}T02:00:00Z")]))
    (root / log_key(DAY, "inside-link")).symlink_to(spare)

    report = ingest.ingest(str(root), lake, now=NOW)

    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["good-1", "via-link"]
    assert (report.objects_read, report.objects_quarantined) == (2, 2)
    reasons = quarantined(report, lake)
    assert "outside" in reasons[link.name]["reason"] and "outside" in reasons["shadow.json.gz"]["reason"]
    assert reasons[link.name]["size"] != secret.stat().st_size  # not even its size is read
    leaked = [data for data in all_lake_bytes(lake) if b"PRIVATE KEY" in data or b"secret-hash" in data]
    assert leaked == []
    assert ingest.ingest(str(root), lake, now=NOW).objects_read == 0


def test_a_fifo_in_the_source_does_not_hang_the_run(tmp_path: Path, lake: Path) -> None:
    root = tmp_path / "trail"
    good_object(root)
    fifo = root / log_key(DAY, "fifo")
    os.mkfifo(fifo)
    report = ingest.ingest(str(root), lake, now=NOW)
    assert (report.objects_read, report.objects_quarantined) == (1, 1)
    assert "not a regular file" in quarantined(report, lake)[fifo.name]["reason"]


def test_a_file_name_that_is_not_utf8_is_quarantined_by_name(tmp_path: Path, lake: Path) -> None:
    root = tmp_path / "trail"
    good = good_object(root)
    folder = os.fsencode(good.parent)
    with open(os.path.join(folder, b"bad-\xff-name.json.gz"), "wb") as handle:
        handle.write(log_bytes([record("behind-a-bad-name", f"{DAY}T03:00:00Z")]))

    report = ingest.ingest(str(root), lake, now=NOW)

    assert (report.objects_read, report.objects_quarantined, report.events_kept) == (1, 1, 1)
    assert "UTF-8" in quarantined(report, lake)["bad-\\xff-name.json.gz"]["reason"]
    assert ingest.ingest(str(root), lake, now=NOW).objects_read == 0


def test_markup_in_event_times_and_paths_is_printed_literally(tmp_path: Path, lake: Path) -> None:
    """rich parsed trail text in the summary as markup: `[/bold]` raised MarkupError after the batch was
    committed (exit 1), and the rerun exited 0, so the quarantine was never reported."""
    root = tmp_path / "trail"
    good_object(root)
    records = [record("bold-time", "[/bold]"), record("fine", f"{DAY}T04:00:00Z")]
    write_local(root, log_key(DAY, "[/bold]:secret:"), log_bytes(records))
    write_local(root, log_key(DAY, "[red]corrupt"), b"\x1f\x8b[/red] \x1b[2J")
    write_local(root, log_key(DAY, "esc\x1b[2Jname"), b"")

    result = cli_ingest(root, lake)

    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "[/bold]" in text and "[red]corrupt" in text and ":secret:" in text
    assert "esc\\x1b[2Jname" in text and "\x1b" not in result.output


def test_a_lake_that_cannot_be_written_stops_the_run_with_one_line(tmp_path: Path, monkeypatch) -> None:
    from pipeline.ingest_failures import RunFault

    root = tmp_path / "trail"
    good_object(root)
    write_local(root, log_key(DAY, "corrupt"), b"\x1f\x8b broken")
    lake = tmp_path / "lake"

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(lakelib.quarantine, "write_atomic", disk_full)
    with pytest.raises(RunFault, match=f"cannot write the lake {re.escape(str(lake))}.*free some space"):
        ingest.ingest(str(root), lake, now=NOW)
    result = cli_ingest(root, lake)
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "No space left on device" in message and str(lake) in message and "rerun" in message
    assert lake_table(lake).num_rows == 0 and list(lakelib.read_ledger(lake)) == []  # nothing half-committed

    monkeypatch.undo()
    assert ingest.ingest(str(root), lake, now=NOW).objects_read == 1
    assert lake_table(lake).column("event_id").to_pylist() == ["good-1"]


def test_a_lake_path_that_is_a_file_is_a_run_fault(tmp_path: Path) -> None:
    root = tmp_path / "trail"
    good_object(root)
    not_a_folder = tmp_path / "lake"
    not_a_folder.write_text("I am a file")
    result = cli_ingest(root, not_a_folder)
    assert result.exit_code == 1
    assert "cannot write the lake" in " ".join(result.output.split())


def test_a_source_that_cannot_be_read_is_a_run_fault_not_a_lake_fault(tmp_path: Path, lake: Path, monkeypatch) -> None:
    """An I/O error that says nothing about the object (a device error, a mount gone) stops the run: marking
    the object bad would record a verdict in the ledger for a fault that may go away."""
    from pipeline.ingest_failures import RunFault

    root = tmp_path / "trail"
    path = good_object(root)

    def broken_disk(obj, client=None):
        raise OSError(errno.EIO, "Input/output error", obj.source)

    monkeypatch.setattr(ingest_workers, "fetch", broken_disk)
    with pytest.raises(RunFault, match=f"cannot read the source.*{re.escape(path.name)}"):
        ingest.ingest(str(root), lake, now=NOW)
    result = cli_ingest(root, lake)
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and "Input/output error" in message and "--lake" not in message
    assert list(lakelib.read_ledger(lake)) == []


def test_a_bug_is_not_mistaken_for_bad_data(tmp_path: Path, lake: Path, monkeypatch) -> None:
    root = tmp_path / "trail"
    good_object(root)

    def bug(*args, **kwargs):
        raise AttributeError("a programming error")

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(ingest_workers.events, "rows_from_log", bug)
    with pytest.raises(AttributeError):
        ingest.ingest(str(root), lake, now=NOW)
    monkeypatch.setattr(ingest_workers.events, "rows_from_log", out_of_memory)
    with pytest.raises(MemoryError):
        ingest.ingest(str(root), lake, now=NOW)
    assert list(lakelib.read_ledger(lake)) == []


def test_worker_processes_apply_the_same_failure_model(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "trail"
    for n in range(4):
        good_object(root, f"good{n}")
    write_local(root, log_key(DAY, "utf8"), with_raw([record("u", f"{DAY}T01:00:00Z", userAgent=MARK)], b'"\xff"'))
    write_local(root, log_key(DAY, "deep"), with_raw([record("d", f"{DAY}T01:00:00Z", resources=MARK)], deep(4000)))
    (root / log_key(DAY, "dangling")).symlink_to(tmp_path / "nowhere")
    write_local(root, log_key(DAY, "corrupt"), b"\x1f\x8b broken")
    monkeypatch.setattr(ingest_workers, "MIN_BYTES_PER_WORKER", 1)
    monkeypatch.setattr(ingest_workers, "_TASK_OBJECTS", 2)  # several tasks: the pool runs some of them
    one, two = tmp_path / "one", tmp_path / "two"
    first = ingest.ingest(str(root), one, now=NOW, workers=1)
    second = ingest.ingest(str(root), two, now=NOW, workers=2)
    assert lake_table(two).equals(lake_table(one)) and lake_table(one).num_rows == 4
    counts = [(r.objects_read, r.objects_quarantined, r.events_rejected) for r in (first, second)]
    assert counts == [(6, 2, 2), (6, 2, 2)]


def test_a_gzip_bomb_is_a_bad_object_not_an_out_of_memory_run(
    tmp_path: Path, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small object that inflates past the cap (here 1 MiB, 512 MiB in production) used to be gunzipped whole:
    enough of them, or one big enough, ran the run out of memory. It is quarantined; the rest is kept."""
    monkeypatch.setattr(ingest_workers, "MAX_LOG_BYTES", 1 << 20)
    root = tmp_path / "trail"
    good_object(root)
    bomb = gzip.compress(b'{"Records": [' + b" " * (8 << 20) + b"]}", mtime=0)  # 8 MiB of JSON in ~8 KB
    assert len(bomb) * 1032 > ingest_workers.MAX_LOG_BYTES  # the streamed, capped path
    write_local(root, log_key(DAY, "bomb"), bomb)

    report = ingest.ingest(str(root), lake, now=NOW, workers=1)

    assert lake_table(lake).column("event_id").to_pylist() == ["good-1"]
    assert report.objects_quarantined == 1
    (reason,) = [r for key, r in quarantined(report, lake).items() if "bomb" in key]
    assert "gzip bomb" in reason["reason"] and "1 MiB" in reason["reason"]


def test_gunzip_below_the_cap_is_unchanged_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = json.dumps({"Records": [record("r", f"{DAY}T01:00:00Z")] * 200}).encode()
    packed = gzip.compress(payload) + gzip.compress(b"")  # two members, as some writers produce
    assert ingest_workers.decompress(packed, "x.json.gz") == payload  # one-shot path
    monkeypatch.setattr(ingest_workers, "MAX_LOG_BYTES", len(payload))  # now only the streamed path is safe
    assert len(packed) * 1032 > ingest_workers.MAX_LOG_BYTES
    assert ingest_workers.decompress(packed, "x.json.gz") == payload
    with pytest.raises(ingest_workers.LogFormatError, match="corrupt gzip"):
        ingest_workers.decompress(packed[:-12], "x.json.gz")
