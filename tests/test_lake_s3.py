"""A lake on S3 (moto server): commits by conditional writes, crash + rerun, concurrent writer processes, and
readers that see only committed files through their local replica."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_ingest import make_trail
from trails import Crash, crash_at, day_of, lake_table, log_bytes, log_key, record, s3_client, write_local

from pipeline import ingest
from pipeline import lake as lakelib

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
LAKE = "s3://keytrail-lake-bucket/team/lake"


def lake_client(endpoint: str) -> Any:
    client = s3_client(endpoint)
    client.create_bucket(Bucket="keytrail-lake-bucket")
    return client


def reader(endpoint: str, cache: Path) -> Path:
    """A fresh machine's view of the S3 lake: its own replica, synced from the log."""
    return lakelib.resolve(LAKE, s3_client(endpoint), cache)


def test_an_s3_lake_gives_the_local_lakes_events_and_a_crash_then_rerun_gives_the_clean_lake(
    aws: str, tmp_path: Path, monkeypatch
) -> None:
    client = lake_client(aws)
    root = tmp_path / "trail"
    make_trail(root)
    local = tmp_path / "local"
    ingest.ingest(str(root), local, now=NOW)
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 12)  # several batches: some commit before the crash
    with pytest.raises(Crash):
        ingest.ingest(
            str(root), LAKE, lake_client=client, cache_dir=tmp_path / "writer", now=NOW, checkpoint=crash_at("object:7")
        )
    partial = lake_table(reader(aws, tmp_path / "reader-1"))
    assert 0 < partial.num_rows < lake_table(local).num_rows  # only committed batches, never the crashed one's files
    with pytest.raises(Crash):  # files uploaded, no log entry: invisible
        ingest.ingest(
            str(root),
            LAKE,
            lake_client=client,
            cache_dir=tmp_path / "writer",
            now=NOW,
            checkpoint=crash_at("files-published"),
        )
    assert lake_table(reader(aws, tmp_path / "reader-1")).equals(partial)
    rerun = ingest.ingest(str(root), LAKE, lake_client=client, cache_dir=tmp_path / "writer", now=NOW)
    assert rerun.objects_skipped > 0
    fresh = reader(aws, tmp_path / "reader-2")
    assert lake_table(fresh).equals(lake_table(local))
    assert lake_table(reader(aws, tmp_path / "reader-1")).equals(lake_table(local))  # an older replica catches up
    assert ingest.ingest(str(root), LAKE, lake_client=client, cache_dir=tmp_path / "other", now=NOW).objects_read == 0


def test_the_read_through_cache_stays_within_its_bound(aws: str, tmp_path: Path) -> None:
    client = lake_client(aws)
    root = tmp_path / "trail"
    make_trail(root, days=3, objects_per_day=2)
    ingest.ingest(str(root), LAKE, lake_client=client, cache_dir=tmp_path / "writer", now=NOW)
    remote = lakelib.open_remote(LAKE, client, tmp_path / "reader", cache_bytes=1)
    files = lakelib.committed_files(remote.replica, day_of(0), day_of(0))
    assert len(files) == 1 and files[0].exists()  # what was asked for is local ...
    later = lakelib.committed_files(remote.replica, day_of(2), day_of(2))
    assert later[0].exists() and not files[0].exists()  # ... and the least recently used went back to a stub
    assert lake_table(remote.replica).num_rows == lake_table(reader(aws, tmp_path / "writer")).num_rows


WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from pipeline import aws, ingest
    endpoint, root, cache, lake = sys.argv[1:5]
    client = aws.client("s3", endpoint_url=endpoint)
    ingest.MAX_BATCH_EVENTS = 5  # many commits, so the two writers race for log entries
    ingest.ingest(root, lake, lake_client=client, cache_dir=Path(cache), now=dt.datetime(2024, 6, 1, tzinfo=dt.UTC))
    """
)


def test_two_writer_processes_never_lose_or_duplicate_an_event(aws: str, tmp_path: Path) -> None:
    lake_client(aws)
    roots = [tmp_path / "trail-a", tmp_path / "trail-b"]
    make_trail(roots[0], days=2, objects_per_day=4)
    make_trail(roots[1], days=2, objects_per_day=4)  # the same events in other objects: re-deliveries
    for n in range(6):
        day = day_of(n % 2)
        write_local(roots[1], log_key(day, f"extra{n}"), log_bytes([record(f"b-only-{n}", f"{day}T05:00:0{n}Z")]))
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, aws, str(root), str(tmp_path / f"cache-{n}"), LAKE])
        for n, root in enumerate(roots)
    ]
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    union = tmp_path / "union"
    ingest.ingest(str(roots[0]), union, now=NOW)
    ingest.ingest(str(roots[1]), union, now=NOW)
    table = lake_table(reader(aws, tmp_path / "reader"))
    ids = table.column("event_id").to_pylist()
    assert len(ids) == len(set(ids))  # never duplicated
    assert set(ids) == set(lake_table(union).column("event_id").to_pylist())  # never lost
