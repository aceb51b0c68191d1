"""Hourly rollups: committed with their events (one protocol), equal to a GROUP BY of the committed events whatever
the batching, late files and duplicates, crashes, compaction and rebuilds."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from trails import ACCOUNT, Crash, crash_at, day_of, lake_table, log_bytes, log_key, record, write_local
from typer.testing import CliRunner

from pipeline import callers, ingest
from pipeline import lake as lakelib
from pipeline.cli import app
from pipeline.lake import rollups

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
ROLE = f"arn:aws:iam::{ACCOUNT}:role/etl-worker"
SSO_ROLE = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123456789abcdef"


def varied(event_id: str, when: str, n: int) -> dict[str, Any]:
    """A record whose caller, key, error, source IP and encryption context vary with `n`."""
    overrides: dict[str, Any] = {"sourceIPAddress": f"10.0.{n % 3}.{n % 23}"}
    if n % 4 == 1:  # an assumed-role session: the caller is its role
        overrides["userIdentity"] = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/etl-worker/run-{n}",
            "accountId": ACCOUNT,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": ROLE, "userName": "etl-worker"}},
        }
    elif n % 4 == 2:  # an Identity Center session: the caller is the person's session
        overrides["userIdentity"] = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/person{n % 2}",
            "accountId": ACCOUNT,
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": SSO_ROLE, "userName": "AWSReservedSSO"}},
        }
    if n % 5 == 0:
        overrides["errorCode"] = "AccessDenied"
    if n % 3 == 0:  # a key named only by its alias
        overrides["resources"] = None
        overrides["requestParameters"] = {"keyId": "alias/app"}
    else:
        overrides["requestParameters"] = {
            "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "encryptionContext": {"customer": f"t-{n % 70:02d}", "purpose": "orders" if n % 2 else "billing"},
        }
    name = "GetSecretValue" if n % 7 == 3 else "Decrypt"
    if n % 11 == 5:  # one call naming several secrets: each secret's row counts it
        name = "BatchGetSecretValue"
        overrides["resources"] = None
        overrides["requestParameters"] = {"secretIdList": [f"prod/s{n % 3}", "prod/shared"]}
    return record(event_id, when, name, **overrides)


def expected(events: pa.Table) -> list[dict[str, Any]]:
    """The hourly rollup of `events`, computed in plain Python (an independent GROUP BY)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in events.to_pylist():
        context = row["encryption_context"]
        shape = tuple(sorted(k for k, _ in context)) if context is not None else None
        for secret in row["secret_ids"] or [row["secret_id"]]:
            key = (
                row["event_time"].replace(minute=0, second=0, microsecond=0),
                row["event_date"],
                row["recipient_account_id"],
                row["aws_region"],
                callers.caller_arn(row["principal_arn"], row["session_issuer_arn"]),
                row["principal_account_id"],
                row["principal_type"],
                row["invoked_by"],
                row["key_arn"] if row["key_arn"] is not None else row["key_id"],
                secret,
                shape,
                row["event_source"],
                row["event_name"],
                row["error_code"],
            )
            groups[key].append(row)
    out = []
    for key, rows in groups.items():
        ips = sorted({r["source_ip"] for r in rows if r["source_ip"] is not None})
        values: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            for context_key, value in r["encryption_context"] or ():
                values[context_key].add(value)
        contexts = [
            {
                "key": k,
                "values": sorted(values[k])[: rollups.MAX_CONTEXT_VALUES],
                "overflow": len(values[k]) > rollups.MAX_CONTEXT_VALUES,
            }
            for k in sorted(values)
        ]
        out.append(
            dict(zip(rollups.GROUP_COLUMNS, key, strict=True))
            | {"context_keys": list(key[10]) if key[10] is not None else None}
            | {
                "events": len(rows),
                "first_seen": min(r["event_time"] for r in rows),
                "last_seen": max(r["event_time"] for r in rows),
                "source_ips": ips[: rollups.MAX_SOURCE_IPS],
                "source_ips_overflow": len(ips) > rollups.MAX_SOURCE_IPS,
                "contexts": contexts[: rollups.MAX_CONTEXT_KEYS],
                "contexts_overflow": len(contexts) > rollups.MAX_CONTEXT_KEYS,
            }
        )
    return _sorted(out)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: [(r[c] is None, r[c] or "") for c in rollups.GROUP_COLUMNS])


def rolled(lake: Path, start: dt.date | None = None, end: dt.date | None = None) -> list[dict[str, Any]]:
    return _sorted(rollups.read(lake, start, end).to_pylist())


def glob_rollups(lake: Path) -> list[dict[str, Any]]:
    """What merging every rollup file on disk gives (a reader that globs rollups/**)."""
    return _sorted(rollups.merge(sorted(lakelib.rollups_dir(lake).glob("**/*.parquet"))).to_pylist())


def write_object(root: Path, day: dt.date, name: str, records: list[dict[str, Any]]) -> None:
    write_local(root, log_key(day, name), log_bytes(records))


def first_run(root: Path) -> None:
    """Two days, several objects each (and one EC2 record per object, which ingest drops)."""
    for d in range(2):
        day = day_of(d)
        for o in range(3):
            records = [varied(f"e-{d}-{o}-{i}", f"{day}T{8 + o:02d}:{i:02d}:{i % 60:02d}Z", i + o) for i in range(40)]
            records.append(record(f"ec2-{d}-{o}", f"{day}T10:00:00Z", "RunInstances"))
            write_object(root, day, f"{day:%Y%m%d}T{o:02d}00Z_{o:016d}", records)


def second_run(root: Path) -> None:
    """A late object for the first day, a re-delivered event from the first run, and one eventID in two new
    objects (the copy listed first wins, the other is a duplicate)."""
    late = [varied(f"late-{i}", f"{day_of(0)}T09:{i:02d}:30Z", i * 7) for i in range(30)]
    late.append(varied("e-0-1-3", f"{day_of(0)}T09:03:03Z", 4))  # committed by the first run
    write_object(root, day_of(0), "20240501T2355Z_late", late)
    shared = varied("twice", f"{day_of(1)}T11:00:00Z", 9)
    write_object(root, day_of(1), "20240502T1100Z_a", [shared, varied("new-a", f"{day_of(1)}T11:01:00Z", 10)])
    write_object(root, day_of(1), "20240502T1101Z_b", [shared, varied("new-b", f"{day_of(1)}T12:01:00Z", 11)])


@pytest.fixture
def small_bounds(monkeypatch) -> None:
    """Bounds small enough that the trail overflows them, so merging the samples is exercised."""
    monkeypatch.setattr(rollups, "MAX_SOURCE_IPS", 4)
    monkeypatch.setattr(rollups, "MAX_CONTEXT_VALUES", 5)
    monkeypatch.setattr(rollups, "MAX_CONTEXT_KEYS", 1)


def ingest_two_runs(root: Path, lake: Path) -> None:
    first_run(root)
    ingest.ingest(str(root), lake, now=NOW)
    second_run(root)
    report = ingest.ingest(str(root), lake, now=NOW)
    assert report.events_duplicate == 2 and report.events_kept == 33  # the re-delivered event + "twice"


def test_rollups_equal_a_group_by_of_the_committed_events(tmp_path: Path, monkeypatch, small_bounds) -> None:
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 50)  # several batches per run: several files per day
    lake = tmp_path / "lake"
    ingest_two_runs(tmp_path / "trail", lake)
    events = lake_table(lake)
    assert rolled(lake) == expected(events)
    assert any(row["source_ips_overflow"] for row in rolled(lake))  # the bounds were reached and merged
    assert any(c["overflow"] for row in rolled(lake) for c in row["contexts"])
    assert any(row["contexts_overflow"] for row in rolled(lake))
    for d in range(2):  # a day's rollups are its events' GROUP BY
        day = day_of(d)
        day_events = events.filter(pc.equal(events.column("event_date"), pa.scalar(day)))
        assert rolled(lake, day, day) == expected(day_events)
        assert len(lakelib.committed_rollup_files(lake, day, day)) > 1  # one per batch and day
    assert sum(row["events"] for row in rolled(lake)) == events.num_rows == 273
    # every ledger record names its rollup files, and they are the ones on disk
    named = {entry.path for record_ in lakelib.read_ledger(lake) for entry in record_.rollups}
    assert named == {p.relative_to(lake).as_posix() for p in lakelib.committed_rollup_files(lake)}


def test_rebuild_gives_the_incremental_rollups(tmp_path: Path, monkeypatch, small_bounds) -> None:
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 50)
    lake = tmp_path / "lake"
    ingest_two_runs(tmp_path / "trail", lake)
    incremental = rolled(lake)
    files_before = len(lakelib.committed_rollup_files(lake))
    reports = [rollups.rebuild(lake, day, now=NOW) for day in rollups.rebuild_days(lake)]
    assert [r.day for r in reports] == [day_of(0), day_of(1)]
    assert sum(r.files_before for r in reports) == files_before
    assert sum(r.events for r in reports) == lake_table(lake).num_rows
    assert rolled(lake) == incremental == glob_rollups(lake)  # the old files are gone
    assert len(lakelib.committed_rollup_files(lake)) == 2
    assert [r.kind for r in lakelib.read_ledger(lake)].count("rollup") == 2
    # a lake whose rollups were lost (or written before rollups existed) gets them back
    shutil.rmtree(lakelib.rollups_dir(lake))
    assert rolled(lake) == []
    for day in rollups.rebuild_days(lake):
        rollups.rebuild(lake, day, now=NOW)
    assert rolled(lake) == incremental


@pytest.mark.parametrize("stage", ["object:2", "events-published", "files-published", "ledger-written"])
def test_a_crash_mid_commit_then_rerun_gives_the_clean_lake_events_and_rollups(
    tmp_path: Path, monkeypatch, stage: str
) -> None:
    root = tmp_path / "trail"
    first_run(root)
    second_run(root)
    clean = tmp_path / "clean"
    ingest.ingest(str(root), clean, now=NOW)
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 50)
    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        ingest.ingest(str(root), crashed, now=NOW, checkpoint=crash_at(stage))
    # before any recovery, readers see rollups that match the events they see
    assert rolled(crashed) == expected(lake_table(crashed))
    ingest.ingest(str(root), crashed, now=NOW)
    assert lake_table(crashed).equals(lake_table(clean))
    assert rolled(crashed) == rolled(clean) == expected(lake_table(clean))
    assert glob_rollups(crashed) == rolled(clean)  # no orphan rollup file left on disk
    assert not list((crashed / "_staging").iterdir())


def test_a_commit_that_drops_committed_event_ids_rolls_up_only_the_rows_it_kept(lake: Path) -> None:
    day = day_of(0)
    table = ingest_table([varied(f"a-{i}", f"{day}T10:{i:02d}:00Z", i) for i in range(10)])
    commit(lake, table, "first")
    again = ingest_table([varied(f"a-{i}", f"{day}T10:{i:02d}:00Z", i) for i in range(5, 15)])
    with lakelib.BatchWriter(lake, NOW) as writer:  # staged before it learns a-5..a-9 are committed
        obj = source("second")
        writer.add(again.to_batches()[0], [(obj, again.num_rows)])
        record_ = writer.commit()
    assert (record_.events_kept, record_.events_duplicate) == (5, 5)
    assert rolled(lake) == expected(lake_table(lake))
    assert sum(row["events"] for row in rolled(lake)) == 15


def test_compaction_keeps_the_rollups_and_merges_their_files(tmp_path: Path, monkeypatch, small_bounds) -> None:
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 50)
    lake = tmp_path / "lake"
    ingest_two_runs(tmp_path / "trail", lake)
    before = rolled(lake)
    for day in lakelib.partitions(lake):
        assert len(lakelib.committed_rollup_files(lake, day, day)) > 1
        lakelib.compact(lake, day, now=NOW)
        assert len(lakelib.committed_rollup_files(lake, day, day)) == 1
    assert rolled(lake) == before == glob_rollups(lake)
    assert rolled(lake) == expected(lake_table(lake))


@pytest.mark.parametrize("stage", ["events-published", "files-published", "ledger-written"])
def test_a_crash_during_compaction_or_rebuild_never_changes_the_rollups(lake: Path, stage: str) -> None:
    day = day_of(0)
    for n in range(3):
        commit(lake, ingest_table([varied(f"c{n}-{i}", f"{day}T1{n}:{i:02d}:00Z", i + n) for i in range(20)]), f"{n}")
    before = rolled(lake)
    with pytest.raises(Crash):
        lakelib.compact(lake, day, now=NOW, checkpoint=crash_at(stage))
    assert rolled(lake) == before
    lakelib.recover(lake)
    assert rolled(lake) == before == glob_rollups(lake)
    with pytest.raises(Crash):
        rollups.rebuild(lake, day, now=NOW, checkpoint=crash_at(stage))
    assert rolled(lake) == before
    assert lakelib.recover(lake) == 2  # the intent and the staging
    assert rolled(lake) == before == glob_rollups(lake)
    assert len(lakelib.committed_rollup_files(lake)) == (1 if stage == "ledger-written" else 3)


def test_the_rebuild_command_recreates_a_days_rollups(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 50)
    lake = tmp_path / "lake"
    ingest_two_runs(tmp_path / "trail", lake)
    before = rolled(lake)
    runner = CliRunner()
    help_text = runner.invoke(app, ["rollups", "rebuild", "--help"]).output
    assert "Example: keytrail rollups rebuild" in help_text
    result = runner.invoke(app, ["rollups", "rebuild", "--lake", str(lake), "--date", day_of(1).isoformat()])
    assert result.exit_code == 0, result.output
    assert day_of(1).isoformat() in result.output
    assert len(lakelib.committed_rollup_files(lake, day_of(1), day_of(1))) == 1
    assert len(lakelib.committed_rollup_files(lake, day_of(0), day_of(0))) > 1  # the other day untouched
    result = runner.invoke(app, ["rollups", "rebuild", "--lake", str(lake)])
    assert result.exit_code == 0, result.output
    assert len(lakelib.committed_rollup_files(lake)) == 2
    assert rolled(lake) == before
    missing = runner.invoke(app, ["rollups", "rebuild", "--lake", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no events/" in missing.output
    bad = runner.invoke(app, ["rollups", "rebuild", "--lake", str(lake), "--date", "yesterday"])
    assert bad.exit_code == 2


def test_rollup_files_are_small_typed_parquet(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    first_run(tmp_path / "trail")
    ingest.ingest(str(tmp_path / "trail"), lake, now=NOW)
    for path in lakelib.committed_rollup_files(lake):
        assert path.parent.parent == lakelib.rollups_dir(lake)
        assert pq.read_schema(path).remove_metadata().equals(rollups.ROLLUP_SCHEMA)
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


# --- helpers committing through the writer directly ---------------------------------------------------------


def ingest_table(records: list[dict[str, Any]]) -> pa.Table:
    from pipeline import events

    return events.normalize_many(records, "s3://bucket/key").combine_chunks()


def source(key: str):
    from pipeline.s3 import LogObject

    return LogObject(source="s3://bucket/key", bucket="bucket", key=key, etag="e", size=1)


def commit(lake: Path, table: pa.Table, key: str) -> None:
    with lakelib.BatchWriter(lake, NOW) as writer:
        writer.add(table.to_batches()[0], [(source(key), table.num_rows)])
        writer.commit()


def test_a_lake_without_current_rollups_is_read_from_its_events_with_a_warning(tmp_path: Path, caplog) -> None:
    """A lake written before this rollup grain (no rollups/hourly-v2/) still gets exact baselines: the engine
    computes the missing days' rollups from their events and says how to store them."""
    from pipeline.engine import Engine

    lake = tmp_path / "lake"
    ingest_two_runs(tmp_path / "trail", lake)
    since, until = dt.datetime(2024, 5, 2, tzinfo=dt.UTC), dt.datetime(2024, 5, 3, tzinfo=dt.UTC)
    lookback = dt.timedelta(days=1)

    def hourly_rows() -> list[dict[str, Any]]:
        with Engine.for_lake(lake, since, until, lookback=lookback) as engine:
            return _sorted(rollups.merge(engine.sql("SELECT * FROM hourly")).to_pylist())

    stored = hourly_rows()
    assert stored == rolled(lake) and len(stored) > 10
    assert "no hourly rollups" not in caplog.text
    shutil.rmtree(lakelib.rollups_dir(lake))  # as an older release left it
    assert hourly_rows() == stored
    assert "no hourly rollups for 2 day(s) from 2024-05-01" in caplog.text and "keytrail rollups rebuild" in caplog.text


def test_a_batch_too_big_for_the_small_memory_cap_is_rolled_up_again_under_the_large_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """List aggregates cannot spill: a batch whose distinct values exceed the cap must not crash ingest."""
    table = ingest_table([varied(f"e-{n}", f"2024-06-01T{n % 24:02d}:{n % 60:02d}:00Z", n) for n in range(6000)])
    expected = rollups.hourly(table)
    monkeypatch.setattr(rollups, "MEMORY_LIMIT", "1MB")
    monkeypatch.setattr(rollups._local, "con", None, raising=False)  # a new session, opened under the tiny cap
    with caplog.at_level("INFO", logger="pipeline.lake.rollups"):
        assert rollups.hourly(table).equals(expected)
    assert "retrying under a 4GB memory cap" in caplog.text
    ((limit,),) = rollups._local.con.execute("SELECT current_setting('memory_limit')").fetchall()
    assert limit.replace(" ", "").upper().startswith(("1.0MB", "1MB", "976")), limit  # back to the small cap
