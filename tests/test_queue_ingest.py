"""Ingest driven by S3 event notifications, against moto's server: S3 -> SQS / SNS / EventBridge -> the lake."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from notification_bodies import s3_body
from queue_trail import NOW, ROUTES, QueueTrail
from trails import BUCKET, day_of, lake_table, log_key

from pipeline import ingest, notifications
from pipeline.notifications import SHAPE_EVENTBRIDGE, SHAPE_S3, SHAPE_SNS

PREFIX = "trail logs+2024"  # S3 notifications encode it as trail+logs%2B2024
SOURCE = f"s3://{BUCKET}/{PREFIX}"
SHAPE_OF = {"sqs": SHAPE_S3, "sns": SHAPE_SNS, "sns-raw": SHAPE_S3, "eventbridge": SHAPE_EVENTBRIDGE}


def event_ids(lake: Path) -> list[str]:
    return lake_table(lake).column("event_id").to_pylist()


def days_by_id(lake: Path) -> dict[str, dt.date]:
    table = lake_table(lake)
    return dict(zip(table.column("event_id").to_pylist(), table.column("event_date").to_pylist(), strict=True))


@pytest.mark.parametrize("route", ROUTES)
def test_put_object_notifications_by_every_route_ingest_each_object_once(aws: str, lake: Path, route: str) -> None:
    trail = QueueTrail(aws)
    trail.wire(route)
    wanted = trail.put_log(day_of(0), "a", prefix=PREFIX) + trail.put_log(day_of(1), "b", prefix=PREFIX)
    trail.s3.put_object(Bucket=BUCKET, Key=log_key(day_of(0), "d", kind="CloudTrail-Digest"), Body=b"{}")
    trail.s3.put_object(Bucket=BUCKET, Key="exports/keys report.csv", Body=b"id\n")

    report = trail.drain(lake)

    assert event_ids(lake) == sorted(wanted)
    assert report.shapes[SHAPE_OF[route]] >= 4 and report.objects_notified == 4
    assert report.ingest.objects_read == 2 and report.ingest.events_kept == 4
    assert report.skipped[notifications.SKIP_DIGEST] == 1
    assert report.skipped[notifications.SKIP_NOT_CLOUDTRAIL] == 1
    assert (report.messages_failed, report.messages_deleted) == (0, report.messages_received)
    assert trail.waiting() == 0
    # What the queue brought in has the identity a listing gives it: the listing run reads nothing again.
    listed = ingest.ingest(SOURCE, lake, s3_client=trail.s3, now=NOW)
    assert (listed.objects_read, listed.objects_skipped) == (0, 2)


def test_the_test_event_s3_sends_on_configuration_is_acknowledged(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    trail.wire("sqs")  # moto, like S3, sends s3:TestEvent to the queue
    report = trail.drain(lake)
    assert (report.messages_received, report.control_messages, report.messages_deleted) == (1, 1, 1)
    assert report.shapes == {notifications.SHAPE_TEST: 1} and event_ids(lake) == []
    assert trail.waiting() == 0


def test_redelivered_message_gives_the_events_once(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    wanted = trail.put_log(day_of(0), "a")
    etag = trail.s3.head_object(Bucket=BUCKET, Key=log_key(day_of(0), "a"))["ETag"].strip('"')
    body = s3_body(log_key(day_of(0), "a"), bucket=BUCKET, etag=etag)
    trail.send(body)
    trail.send(body)  # SQS at-least-once: the same notification twice in one batch

    first = trail.drain(lake)
    assert (first.objects_repeated, first.ingest.objects_read, first.ingest.events_kept) == (1, 1, 2)

    trail.send(body)  # and once more after the commit
    again = trail.drain(lake)
    assert (again.ingest.objects_read, again.ingest.objects_skipped, again.ingest.events_kept) == (0, 1, 0)
    assert again.messages_deleted == 1 and event_ids(lake) == sorted(wanted)
    assert trail.waiting() == 0


def test_a_message_that_keeps_failing_ends_in_the_dead_letter_queue(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws, max_receive_count=2)
    wanted = trail.put_log(day_of(0), "good")
    trail.send("<html>502 Bad Gateway</html>")  # not a notification at all
    gone = s3_body(log_key(day_of(0), "deleted-before-read"), bucket=BUCKET)  # names an object that is not there
    trail.send(gone)
    trail.send(s3_body(log_key(day_of(0), "good"), bucket=BUCKET))

    report = trail.drain(lake)

    # The good message is committed and deleted although its batch held two bad ones.
    assert event_ids(lake) == sorted(wanted)
    assert report.messages_deleted == 1
    assert report.messages_failed == 4  # two bad messages, two receives each (maxReceiveCount)
    assert sorted(failure.receive_count for failure in report.failures) == [2, 2]  # each message, its latest
    reasons = " | ".join(failure.reason for failure in report.failures)
    assert "not an S3 notification" in reasons and "NoSuchKey" in reasons
    assert report.dead_letter_arn == trail.arn(trail.dead_letter_url or "")
    assert trail.waiting() == 0 and trail.waiting(trail.dead_letter_url) == 2
    dead = trail.sqs.receive_message(QueueUrl=trail.dead_letter_url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(message["Body"] for message in dead) == sorted(["<html>502 Bad Gateway</html>", json.dumps(gone)])


def test_without_a_dead_letter_queue_a_failing_message_is_reported_after_n_receives(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    trail.send('{"Message": "no envelope"}')
    report = trail.drain(lake, max_receives=3)
    assert report.messages_poison == 1 and report.messages_failed == 3
    [poison] = report.poison
    assert poison.receive_count == 3 and "not an S3 notification" in poison.reason
    assert trail.waiting() == 1  # reported, never dropped: it is still there to inspect


def test_late_and_out_of_order_objects_land_in_their_days(aws: str, lake: Path, tmp_path: Path) -> None:
    trail = QueueTrail(aws)
    trail.wire("sqs")
    wanted = trail.put_log(day_of(2), "c", hour=3) + trail.put_log(day_of(1), "b", hour=9)  # newest first
    wanted += trail.put_log(day_of(0), "a", hour=23)
    trail.drain(lake)
    wanted += trail.put_log(day_of(0), "late", hour=22)  # an hour of day 0, delivered after day 2 was committed
    late = trail.drain(lake)
    assert (late.ingest.objects_read, late.ingest.events_kept) == (1, 2)

    # Same lake as listing the whole bucket would give.
    listed_lake = tmp_path / "listed"
    ingest.ingest(f"s3://{BUCKET}", listed_lake, s3_client=trail.s3, now=NOW)
    assert event_ids(lake) == event_ids(listed_lake) == sorted(wanted)
    assert days_by_id(lake) == days_by_id(listed_lake)
    assert days_by_id(lake)[f"{day_of(0)}-late-0"] == day_of(0)


def test_a_missed_notification_is_found_by_the_listing_backstop(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    missed = trail.put_log(day_of(0), "before-notifications-were-on")
    trail.wire("sqs")
    wanted = trail.put_log(day_of(0), "a") + trail.put_log(day_of(0), "b")
    trail.drain(lake)
    assert event_ids(lake) == sorted(wanted)

    backstop = ingest.ingest(f"s3://{BUCKET}", lake, since=day_of(0), until=day_of(0), s3_client=trail.s3, now=NOW)
    assert (backstop.objects_read, backstop.objects_skipped, backstop.events_kept) == (1, 2, 2)
    assert event_ids(lake) == sorted(wanted + missed)


def test_batches_are_bounded_and_a_run_can_stop_early(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    trail.wire("sqs")
    trail.sqs.purge_queue(QueueUrl=trail.url)  # the configuration's test event
    for n in range(25):
        trail.put_log(day_of(0), f"{n:03d}", events=1)
    read_after_batch: list[int] = []

    report = trail.drain(
        lake, batch_messages=10, max_messages=20, on_batch=lambda r: read_after_batch.append(r.ingest.objects_read)
    )
    assert read_after_batch == [10, 20] and report.messages_deleted == 20
    assert trail.waiting() == 5  # never read ahead: the rest is still on the queue

    rest = trail.drain(lake, batch_messages=10)
    assert (rest.batches, rest.ingest.objects_read) == (1, 5) and len(event_ids(lake)) == 25


def test_visibility_is_extended_while_a_slow_batch_is_ingested(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    trail.wire("sqs")
    trail.sqs.purge_queue(QueueUrl=trail.url)
    for n in range(4):
        trail.put_log(day_of(0), f"slow-{n}", events=1)
    seen_by_another_consumer: list[int] = []

    def slow(done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        if done:
            time.sleep(0.6)  # 4 objects: ~2.4 s, more than twice the 1 s visibility timeout
        if done == 3:
            other = trail.sqs.receive_message(QueueUrl=trail.url, MaxNumberOfMessages=10)
            seen_by_another_consumer.append(len(other.get("Messages", [])))

    report = trail.drain(lake, visibility_seconds=1, progress=slow)
    assert seen_by_another_consumer == [0]
    assert report.visibility_extensions >= 3
    assert (report.ingest.objects_read, report.messages_deleted) == (4, 4) and trail.waiting() == 0
