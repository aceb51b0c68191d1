"""ingest from S3 (moto server over HTTP): reruns, duplicates, crash + rerun, bad objects, workers, the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from trails import (
    BAD_OBJECTS,
    BUCKET,
    ORG,
    REASONS,
    Crash,
    crash_at,
    day_of,
    lake_table,
    log_bytes,
    log_key,
    record,
    s3_client,
)
from typer.testing import CliRunner

from pipeline import ingest, ingest_workers
from pipeline.cli import app

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
SOURCE = f"s3://{BUCKET}/org"


def org_key(day: dt.date, name: str, **kwargs: Any) -> str:
    return log_key(day, name, org=ORG, prefix="org", **kwargs)


def put(client: Any, key: str, body: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=key, Body=body)


def upload_trail(client: Any, days: int = 3, per_day: int = 8) -> int:
    """An organization trail of small objects (plus digests); returns the KMS/SM events in it."""
    wanted = 0
    for d in range(days):
        day = day_of(d)
        for o in range(per_day):
            records = [
                record(f"s3-{d}-{o}-{i}", f"{day}T{o:02d}:0{i}:00Z", "GetSecretValue" if i else "Decrypt")
                for i in range(3)
            ]
            records.append(record(f"ec2-{d}-{o}", f"{day}T{o:02d}:00:00Z", "RunInstances"))
            client.put_object(
                Bucket=BUCKET, Key=log_key(day, f"{o:03d}", org=ORG, prefix="org"), Body=log_bytes(records)
            )
            wanted += 3
        client.put_object(
            Bucket=BUCKET, Key=log_key(day, "digest", org=ORG, prefix="org", kind="CloudTrail-Digest"), Body=b"{}"
        )
    return wanted


def get_calls(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: calls.append(params["Key"]))
    return calls


def test_s3_ingest_then_rerun_reads_nothing_and_new_objects_only(aws: str, lake: Path) -> None:
    client = s3_client(aws)
    wanted = upload_trail(client)
    gets = get_calls(client)
    report = ingest.ingest(SOURCE, lake, s3_client=client, now=NOW)
    assert (report.objects_listed, report.objects_read, report.objects_skipped_digest) == (27, 24, 3)
    assert report.events_kept == wanted and report.events_seen == wanted + 24 and len(gets) == 24
    rows = lake_table(lake)
    assert rows.num_rows == wanted
    assert set(rows.column("source_object").to_pylist()) == {f"s3://{BUCKET}/{key}" for key in gets}

    gets.clear()
    again = ingest.ingest(SOURCE, lake, s3_client=client, now=NOW)
    assert (again.objects_read, again.objects_skipped, again.files_written, gets) == (0, 24, 0, [])
    new_key = org_key(day_of(2), "late")
    put(client, new_key, log_bytes([record("late-1", f"{day_of(2)}T23:59:59Z")]))
    later = ingest.ingest(SOURCE, lake, s3_client=client, now=NOW, since=day_of(2), until=day_of(2))
    assert (later.objects_read, later.objects_skipped, later.events_kept, gets) == (1, 8, 1, [new_key])


def test_s3_duplicate_event_ids_are_kept_once(aws: str, lake: Path) -> None:
    client = s3_client(aws)
    day = day_of(0)
    event = record("same-id", f"{day}T05:00:00Z")
    for name in ("a", "b"):  # the same event delivered in two objects (and twice in one)
        put(client, org_key(day, name), log_bytes([event, event]))
    report = ingest.ingest(SOURCE, lake, s3_client=client, now=NOW)
    assert (report.events_kept, report.events_duplicate) == (1, 3)
    assert lake_table(lake).column("event_id").to_pylist() == ["same-id"]


def test_s3_crash_mid_run_then_rerun_gives_the_clean_lake(aws: str, tmp_path: Path, monkeypatch) -> None:
    client = s3_client(aws)
    upload_trail(client, days=2, per_day=6)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    ingest.ingest(SOURCE, clean, s3_client=client, now=NOW)
    monkeypatch.setattr(ingest, "MAX_BATCH_EVENTS", 10)
    with pytest.raises(Crash):
        ingest.ingest(SOURCE, crashed, s3_client=client, now=NOW, checkpoint=crash_at("object:9"))
    partial = lake_table(crashed).num_rows
    assert 0 < partial < lake_table(clean).num_rows  # some batches had committed
    rerun = ingest.ingest(SOURCE, crashed, s3_client=client, now=NOW)
    assert rerun.objects_skipped > 0 and rerun.objects_read < 12
    assert lake_table(crashed).equals(lake_table(clean))


def test_s3_bad_objects_are_quarantined_and_reported(aws: str, lake: Path) -> None:
    client = s3_client(aws)
    day = day_of(0)
    for name, data in BAD_OBJECTS.items():
        put(client, org_key(day, name), data)
    client.put_object(
        Bucket=BUCKET,
        Key=log_key(day, "good", org=ORG, prefix="org"),
        Body=log_bytes([record("ok", f"{day}T01:00:00Z")]),
    )
    report = ingest.ingest(SOURCE, lake, s3_client=client, now=NOW)
    assert (report.objects_quarantined, report.objects_read, report.events_kept) == (len(BAD_OBJECTS), 1, 1)
    for entry in report.quarantine:
        name = entry.source.rsplit("_", 1)[-1].removesuffix(".json.gz")
        assert entry.source.startswith(f"s3://{BUCKET}/org/AWSLogs/{ORG}/")
        assert REASONS[name] in entry.reason
        assert (lake / entry.path).read_bytes() == BAD_OBJECTS[name]
    assert ingest.ingest(SOURCE, lake, s3_client=client, now=NOW).objects_skipped == len(BAD_OBJECTS) + 1


def test_s3_workers_read_with_their_own_clients(aws: str, tmp_path: Path, monkeypatch) -> None:
    client = s3_client(aws)
    upload_trail(client, days=1, per_day=8)
    monkeypatch.setattr(ingest_workers, "MIN_BYTES_PER_WORKER", 1)
    one, two = tmp_path / "one", tmp_path / "two"
    ingest.ingest(SOURCE, one, s3_client=client, now=NOW)
    report = ingest.ingest(SOURCE, two, s3_client=client, now=NOW, workers=2)
    assert report.objects_read == 8
    assert lake_table(two).equals(lake_table(one))


def test_cli_ingest_from_s3_with_endpoint_url(aws: str, lake: Path, monkeypatch) -> None:
    client = s3_client(aws)
    client.put_object(
        Bucket=BUCKET,
        Key=log_key(day_of(0), "one", org=ORG, prefix="org"),
        Body=log_bytes([record("cli-1", "2024-05-01T00:00:00Z")]),
    )
    runner = CliRunner()
    args = ["ingest", SOURCE, "--lake", str(lake), "--endpoint-url", aws, "--workers", "1", "--account", "123837392027"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert lake_table(lake).column("event_id").to_pylist() == ["cli-1"]
    missing = runner.invoke(app, ["ingest", "s3://no-such-bucket-here", "--lake", str(lake), "--endpoint-url", aws])
    assert missing.exit_code == 1 and "no such bucket" in " ".join(missing.output.split())
