"""Scale-out: the mapped ingest on a 2-worker Dask cluster writes exactly the lake the thread pool writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest
from trails import lake_table, log_bytes, log_key, record

from flows.clients import client as cached_client

pytest_plugins = ["prefect_fixtures"]
pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

BUCKET = "keytrail-dask-trail"
ACCOUNTS = ("111122223333", "444455556666")
REGIONS = ("us-east-1", "eu-west-1")
DAYS = (dt.date(2024, 5, 8), dt.date(2024, 5, 9))


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A 2-worker LocalCluster (one process per worker, like one per machine); no bokeh here, so no dashboard."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def put_trail(endpoint: str) -> int:
    """2 accounts x 2 regions x 2 days, 3 objects each; one event delivered twice, in two different chunks."""
    s3 = cached_client("s3", endpoint, None)
    s3.create_bucket(Bucket=BUCKET)
    events = 0
    for account in ACCOUNTS:
        for region in REGIONS:
            for day in DAYS:
                for n in range(3):
                    tag = f"{account}-{region}-{day}-{n}"
                    when = f"{day}T{10 + n:02d}:00:00Z"
                    records = [
                        record(f"{tag}-{i}", when, recipientAccountId=account, awsRegion=region) for i in range(5)
                    ]
                    records.append(record("re-delivered", f"{DAYS[0]}T09:00:00Z"))
                    key = log_key(day, f"{day:%Y%m%d}T{10 + n:02d}05Z_{n}", account=account, region=region)
                    s3.put_object(Bucket=BUCKET, Key=key, Body=log_bytes(records))
                    events += 5
    return events + 1


def test_dask_cluster_builds_the_same_lake_as_the_thread_pool(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dask_address: str
) -> None:
    from distributed import Client, get_task_stream
    from prefect_dask import DaskTaskRunner

    from flows.ingest import ingest_cloudtrail
    from flows.runners import build_task_runner

    monkeypatch.setenv("KEYTRAIL_ENDPOINT_URL", aws)
    expected = put_trail(aws)
    source = f"s3://{BUCKET}"

    threads = ingest_cloudtrail(source, str(tmp_path / "threads"), since=DAYS[0], until=DAYS[1])
    runner = build_task_runner("dask", dask_address)
    assert isinstance(runner, DaskTaskRunner)
    with Client(dask_address) as client, get_task_stream(client=client) as stream:
        on_dask = ingest_cloudtrail.with_options(task_runner=runner)(
            source, str(tmp_path / "dask"), since=DAYS[0], until=DAYS[1]
        )
    # The 8 list + 8 ingest tasks ran on the cluster, spread over both workers.
    assert len(stream.data) >= 16
    assert len({item["worker"] for item in stream.data}) == 2

    assert threads["partitions"] == on_dask["partitions"] == 8
    assert threads["events_kept"] == on_dask["events_kept"] == expected
    a, b = lake_table(tmp_path / "threads"), lake_table(tmp_path / "dask")
    assert a.num_rows == b.num_rows == expected
    assert pc.count_distinct(b.column("event_id")).as_py() == expected
    columns = [name for name in a.column_names if name != "source_object"]
    assert a.select(columns).equals(b.select(columns))
    # Where an event was delivered twice, the copy committed first is kept, and concurrent chunks (threads or
    # Dask workers alike) commit in no fixed order: only that event's source_object may differ.
    differs = [
        event_id
        for event_id, x, y in zip(
            a["event_id"].to_pylist(), a["source_object"].to_pylist(), b["source_object"].to_pylist(), strict=True
        )
        if x != y
    ]
    assert set(differs) <= {"re-delivered"}


def test_dask_worker_processes_build_the_same_s3_lake_as_one_process(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dask_address: str
) -> None:
    """Each worker process (a machine, in production) commits its chunks to one S3 lake through its own replica;
    concurrent commits race for the lake's log entries and none loses or duplicates an event."""
    from distributed import Client, get_task_stream

    from flows.ingest import ingest_cloudtrail
    from flows.runners import build_task_runner
    from pipeline import ingest
    from pipeline import lake as lakelib

    monkeypatch.setenv("KEYTRAIL_ENDPOINT_URL", aws)
    monkeypatch.setenv("KEYTRAIL_CACHE", str(tmp_path / "flow-cache"))
    expected = put_trail(aws)
    s3 = cached_client("s3", aws, None)
    s3.create_bucket(Bucket="keytrail-dask-lake")
    source, lake = f"s3://{BUCKET}", "s3://keytrail-dask-lake/lake"

    ingest.ingest(source, tmp_path / "one", s3_client=s3)  # one process, one local lake
    with Client(dask_address) as client, get_task_stream(client=client) as stream:
        report = ingest_cloudtrail.with_options(task_runner=build_task_runner("dask", dask_address))(
            source, lake, since=DAYS[0], until=DAYS[1]
        )
    assert len({item["worker"] for item in stream.data}) == 2
    assert report["events_kept"] == expected
    a, b = lake_table(tmp_path / "one"), lake_table(lakelib.resolve(lake, s3, tmp_path / "reader"))
    assert b.num_rows == pc.count_distinct(b.column("event_id")).as_py() == expected
    columns = [name for name in a.column_names if name != "source_object"]
    assert a.select(columns).equals(b.select(columns))
