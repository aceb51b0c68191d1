"""The Prefect flows, run for real under a Prefect test harness against moto's S3/SNS/SQS over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from trails import ACCOUNT, KEY_ARN, REGION, lake_table, log_bytes, log_key, record

from flows.clients import client as cached_client
from pipeline import lake as lakelib
from pipeline.alerting.outbox import Outbox

pytest_plugins = ["prefect_fixtures"]
pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.usefixtures("prefect_harness")]

BUCKET = "keytrail-flow-trail"
DAY = dt.date(2024, 5, 8)
OTHER_ACCOUNT = "444455556666"


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def deletion(event_id: str, when: dt.datetime) -> dict[str, Any]:
    """A successful ScheduleKeyDeletion: kms_key_deletion_or_disable fires on one such event."""
    return record(
        event_id,
        stamp(when),
        "ScheduleKeyDeletion",
        readOnly=False,
        requestParameters={"keyId": KEY_ARN, "pendingWindowInDays": 7},
        responseElements={"keyId": KEY_ARN, "keyState": "PendingDeletion"},
    )


def decrypts(prefix: str, when: dt.datetime, count: int = 3) -> list[dict[str, Any]]:
    return [record(f"{prefix}-{n}", stamp(when + dt.timedelta(seconds=n))) for n in range(count)]


class Trail:
    """A CloudTrail bucket on the moto server; objects are put the way CloudTrail delivers them."""

    def __init__(self, endpoint: str) -> None:
        self.s3 = cached_client("s3", endpoint, None)
        self.s3.create_bucket(Bucket=BUCKET)
        self.source = f"s3://{BUCKET}"

    def deliver(
        self, delivered: dt.datetime, records: list[dict[str, Any]], *, account: str = ACCOUNT, region: str = REGION
    ) -> str:
        """Put a log object in the prefix of its delivery time (which is what makes a late file 'late')."""
        key = log_key(
            delivered.date(), f"{delivered:%Y%m%dT%H%MZ}_{records[0]['eventID']}", account=account, region=region
        )
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=log_bytes(records))
        return key


class Subscriber:
    """An SNS topic with an SQS queue subscribed: what an on-call integration would receive."""

    def __init__(self, endpoint: str) -> None:
        sns = cached_client("sns", endpoint, None)
        self.sqs = cached_client("sqs", endpoint, None)
        self.topic_arn = sns.create_topic(Name="keytrail-flow-alerts")["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName="keytrail-flow-oncall")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=arn["QueueArn"])

    def alert_ids(self) -> list[str]:
        """Drain the queue; the alert_id attribute of every message received."""
        ids: list[str] = []
        while messages := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                envelope = json.loads(message["Body"])
                ids.append(envelope["MessageAttributes"]["alert_id"]["Value"])
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return ids


@pytest.fixture
def trail(aws: str, monkeypatch: pytest.MonkeyPatch) -> Trail:
    # Flows read their settings in the flow body, from the environment.
    monkeypatch.setenv("KEYTRAIL_ENDPOINT_URL", aws)
    monkeypatch.delenv("KEYTRAIL_TOPIC_ARN", raising=False)
    return Trail(aws)


@pytest.fixture
def subscriber(aws: str, monkeypatch: pytest.MonkeyPatch) -> Subscriber:
    sub = Subscriber(aws)
    monkeypatch.setenv("KEYTRAIL_TOPIC_ARN", sub.topic_arn)
    return sub


def outbox_ids(lake: Path, state: str | None = None) -> list[str]:
    with Outbox.open(lake) as box:
        return sorted(entry.alert.alert_id for entry in box.entries(state))


def task_run_names(flow_run_id: Any, expected: int, deadline: float = 240.0) -> list[str]:
    """Names of the task runs of a flow run, read back from the Prefect API once the server has recorded them.

    The server records task runs from the events the flow emitted, asynchronously, and under load that takes
    anywhere from a second to minutes: poll the API until `expected` task runs are there and every one of them
    is in a final state. The deadline is only a guard against a hang; the caller's assertions say what is
    missing if it passes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[str]:
        async with get_client() as client:
            give_up = time.monotonic() + deadline
            while True:
                runs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                )
                recorded = len(runs) >= expected and all(run.state is not None and run.state.is_final() for run in runs)
                if recorded or time.monotonic() > give_up:
                    return sorted(run.name for run in runs)
                await asyncio.sleep(0.25)

    return asyncio.run(read())


def test_ingest_cloudtrail_maps_one_task_per_account_region_day(trail: Trail, lake: Path) -> None:
    from flows.ingest import ingest_cloudtrail

    expected = 0
    for day in (DAY, DAY + dt.timedelta(days=1)):
        for account in (ACCOUNT, OTHER_ACCOUNT):
            for region in (REGION, "eu-west-1"):
                when = at(9, day=day)
                records = decrypts(f"{account}-{region}-{day}", when, count=2)
                records.append(record(f"ec2-{account}-{region}-{day}", stamp(when), "RunInstances"))
                trail.deliver(when + dt.timedelta(minutes=5), records, account=account, region=region)
                expected += 2

    state = ingest_cloudtrail(trail.source, str(lake), since=DAY, until=DAY + dt.timedelta(days=1), return_state=True)
    report = state.result()
    assert report["partitions"] == 8
    assert (report["objects_read"], report["events_kept"], report["objects_quarantined"]) == (8, expected, 0)
    assert lake_table(lake).num_rows == expected
    names = task_run_names(state.state_details.flow_run_id, expected=1 + 8 + 8)  # discover, list, ingest
    assert sum(name.startswith("ingest ") for name in names) == 8
    assert f"ingest {OTHER_ACCOUNT}/eu-west-1/{DAY}" in names

    # A second run lists again and reads nothing: every object is in the ledger.
    again = ingest_cloudtrail(trail.source, str(lake), since=DAY, until=DAY + dt.timedelta(days=1))
    assert (again["objects_read"], again["objects_skipped"], again["events_kept"]) == (0, 8, 0)


def test_detect_and_alert_queues_publishes_and_never_repeats(trail: Trail, subscriber: Subscriber, lake: Path) -> None:
    from flows.detect import detect_and_alert
    from flows.ingest import ingest_cloudtrail

    trail.deliver(at(10, 10), [deletion("del-1", at(10, 3)), *decrypts("quiet", at(10, 4))])
    ingest_cloudtrail(trail.source, str(lake), since=DAY, until=DAY)

    first = detect_and_alert(str(lake), horizon="2h", now=at(10, 30))
    assert (first["findings"], len(first["queued"]), first["messages"]) == (1, 1, 1)
    assert outbox_ids(lake, "sent") == first["queued"]
    assert subscriber.alert_ids() == first["queued"]

    # The next scheduled run overlaps the same events: same alert id, already known, nothing sent.
    second = detect_and_alert(str(lake), horizon="2h", now=at(10, 35))
    assert (second["findings"], second["queued"], second["known"], second["messages"]) == (1, [], 1, 0)
    assert subscriber.alert_ids() == []

    # Outside the horizon the event is not evaluated at all.
    later = detect_and_alert(str(lake), horizon="2h", now=at(13, 0), publish=False)
    assert later["findings"] == 0


def flow_run_logs(flow_run_id: Any, text: str, timeout: float = 30.0) -> list[tuple[int, str]]:
    """(level, message) of the flow run's log lines that contain `text`, read back from the Prefect API (logs
    are shipped in the background: poll until one is there, or the timeout)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read() -> list[tuple[int, str]]:
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while True:
                logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
                found = [(log.level, log.message) for log in logs if text in log.message]
                if found or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.2)

    return asyncio.run(read())


def test_without_a_topic_the_flow_queues_warns_and_says_so_in_its_result(trail: Trail, lake: Path) -> None:
    import logging

    from flows.detect import detect_and_alert
    from flows.ingest import ingest_cloudtrail
    from pipeline.alerting.publish import no_topic

    trail.deliver(at(10, 10), [deletion("del-1", at(10, 3))])
    ingest_cloudtrail(trail.source, str(lake), since=DAY, until=DAY)

    state = detect_and_alert(str(lake), horizon="2h", now=at(10, 30), return_state=True)
    result = state.result()
    assert (result["findings"], len(result["queued"]), result["messages"]) == (1, 1, 0)
    assert result["not_published"] == no_topic(1)  # the same line the CLI prints
    assert outbox_ids(lake, "pending") == result["queued"]
    logged = flow_run_logs(state.state_details.flow_run_id, "no SNS topic")
    assert logged == [(logging.WARNING, no_topic(1))]

    # Not asked to publish: nothing to say.
    quiet = detect_and_alert(str(lake), horizon="2h", now=at(10, 35), publish=False)
    assert quiet["not_published"] is None and quiet["known"] == 1


def test_an_undeliverable_alert_is_in_the_flow_result_and_logs_and_blocks_nothing(
    trail: Trail, subscriber: Subscriber, lake: Path
) -> None:
    import logging

    from flows.detect import detect_and_alert
    from flows.ingest import ingest_cloudtrail
    from pipeline.alerting.outbox import enqueue
    from tests.test_alerts import make_alert

    # An alert no trimming can bring under SNS's 256 KB (attack ids are never cut), queued by an earlier run.
    hopeless = make_alert(first_seen=at(9), attack=tuple(f"T{i:07d}" for i in range(40_000)))
    enqueue(lake, [hopeless], now=at(9, 30))
    trail.deliver(at(10, 10), [deletion("del-1", at(10, 3))])
    ingest_cloudtrail(trail.source, str(lake), since=DAY, until=DAY)

    state = detect_and_alert(str(lake), horizon="2h", now=at(10, 30), return_state=True)
    result = state.result()
    assert result["undeliverable"] == [hopeless.alert_id] and result["released"] == []
    assert (result["messages"], result["failed"]) == (1, 0)
    assert subscriber.alert_ids() == result["queued"]  # the new finding went out regardless
    assert outbox_ids(lake, "failed") == [hopeless.alert_id]
    ((level, message),) = flow_run_logs(state.state_details.flow_run_id, "could not be delivered")
    assert level == logging.ERROR and hopeless.alert_id[:12] in message and "keytrail alerts retry" in message


def test_late_file_alerts_on_the_next_run_exactly_once(trail: Trail, subscriber: Subscriber, lake: Path) -> None:
    from flows.pipeline import keytrail_pipeline

    trail.deliver(at(10, 10), decrypts("on-time", at(10, 2)))
    first = keytrail_pipeline(trail.source, str(lake), horizon="2h", now=at(10, 20))
    assert first["ingest"]["events_kept"] == 3
    assert first["detect"]["findings"] == 0

    # The deletion happened at 10:05, inside the window the 10:20 run evaluated, but its file arrives 45 min late.
    trail.deliver(at(10, 50), [deletion("late-del", at(10, 5))])
    second = keytrail_pipeline(trail.source, str(lake), horizon="2h", now=at(10, 55))
    assert second["ingest"]["objects_read"] == 1
    assert (len(second["detect"]["queued"]), second["detect"]["messages"]) == (1, 1)

    third = keytrail_pipeline(trail.source, str(lake), horizon="2h", now=at(11, 0))
    assert third["ingest"]["objects_read"] == 0
    assert (third["detect"]["findings"], third["detect"]["queued"], third["detect"]["messages"]) == (1, [], 0)

    assert subscriber.alert_ids() == second["detect"]["queued"]
    assert outbox_ids(lake) == second["detect"]["queued"]


def test_backfill_is_chunked_by_day_and_safe_to_resume(trail: Trail, subscriber: Subscriber, lake: Path) -> None:
    from flows.backfill import backfill

    day2 = DAY + dt.timedelta(days=1)
    trail.deliver(at(12, 5), [deletion("day1-del", at(12, 0)), *decrypts("day1", at(12, 1))])
    # Deleted at 23:58 on day 2; the file is delivered after midnight, into day 3's prefix.
    trail.deliver(at(0, 6, day2 + dt.timedelta(days=1)), [deletion("day2-del", at(23, 58, day2))])

    # Stopped after the first day...
    partial = backfill(trail.source, since=DAY, until=DAY, lake=str(lake))
    assert [len(day["queued"]) for day in partial["days"]] == [1]
    # ...then resumed over the whole range: day 1 adds nothing, day 2 finds the late-delivered deletion.
    resumed = backfill(trail.source, since=DAY, until=day2, lake=str(lake))
    assert [day["since"][:10] for day in resumed["days"]] == [DAY.isoformat(), day2.isoformat()]
    assert [(len(day["queued"]), day["known"]) for day in resumed["days"]] == [(0, 1), (1, 0)]

    received = subscriber.alert_ids()
    assert sorted(received) == outbox_ids(lake, "sent")
    assert len(received) == len(set(received)) == 2


def test_compact_merges_a_partition_without_changing_rows(trail: Trail, lake: Path) -> None:
    from flows.compact import compact
    from flows.ingest import ingest_cloudtrail

    for hour in (9, 10, 11):  # three runs -> three batch files in the partition
        trail.deliver(at(hour, 5), decrypts(f"h{hour}", at(hour)))
        ingest_cloudtrail(trail.source, str(lake), since=DAY, until=DAY)
    before = lake_table(lake)
    assert len(lakelib.committed_files(lake, DAY, DAY)) == 3

    report = compact(str(lake), DAY)
    assert (report["files_before"], report["files_after"], report["rows"]) == (3, 1, 9)
    (merged,) = lakelib.committed_files(lake, DAY, DAY)
    times = pq.read_table(merged, columns=["event_time"]).column("event_time").to_pylist()
    assert times == sorted(times)
    assert lake_table(lake).equals(before)


def test_task_runner_choice_is_validated() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runners import build_task_runner

    assert isinstance(build_task_runner("threads", max_workers=3), ThreadPoolTaskRunner)
    with pytest.raises(ValueError, match="threads, dask"):
        build_task_runner("processes")
