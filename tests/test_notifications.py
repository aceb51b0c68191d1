"""Parsing S3 event notifications (pure): the three routes to SQS, test events, keys, what is skipped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from notification_bodies import BUCKET, DAY, ETAG, KEY, TEST_EVENT, eventbridge, s3_body, sns_envelope
from trails import ACCOUNT, log_key

from pipeline import notifications
from pipeline.notifications import MessageFormatError, NotifiedObject, parse_message

WANTED = NotifiedObject(BUCKET, KEY, ETAG, 1024)


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        (s3_body(), notifications.SHAPE_S3),
        (sns_envelope(s3_body()), notifications.SHAPE_SNS),
        (eventbridge(), notifications.SHAPE_EVENTBRIDGE),
        (sns_envelope(eventbridge()), notifications.SHAPE_SNS),  # EventBridge -> SNS -> SQS
    ],
    ids=["s3-direct-or-raw-sns", "sns-envelope", "eventbridge", "eventbridge-via-sns"],
)
def test_each_route_names_the_same_object(body: dict[str, Any], shape: str) -> None:
    parsed = parse_message(json.dumps(body))
    assert parsed.shape == shape
    assert parsed.created == (WANTED,)
    assert parsed.not_created == 0


def test_s3_keys_are_url_decoded_and_eventbridge_keys_taken_as_written() -> None:
    key = "trail logs/c++/AWSLogs/123456789012/CloudTrail/us-east-1/2024/05/01/a:b.json.gz"
    encoded = "trail+logs/c%2B%2B/AWSLogs/123456789012/CloudTrail/us-east-1/2024/05/01/a%3Ab.json.gz"
    assert parse_message(json.dumps(s3_body(encoded=encoded))).created[0].key == key
    assert parse_message(json.dumps(sns_envelope(s3_body(encoded=encoded)))).created[0].key == key
    assert parse_message(json.dumps(eventbridge(key))).created[0].key == key


def test_test_events_and_sns_confirmations_name_nothing() -> None:
    assert parse_message(json.dumps(TEST_EVENT)).shape == notifications.SHAPE_TEST
    assert parse_message(json.dumps(sns_envelope(TEST_EVENT))).shape == notifications.SHAPE_TEST
    confirmation = {**sns_envelope(TEST_EVENT), "Type": "SubscriptionConfirmation"}
    parsed = parse_message(json.dumps(confirmation))
    assert (parsed.shape, parsed.created) == (notifications.SHAPE_SNS_CONTROL, ())


def test_removals_and_other_eventbridge_events_are_counted_not_created() -> None:
    removed = s3_body(event="ObjectRemoved:Delete")
    both = {"Records": removed["Records"] + s3_body()["Records"]}
    parsed = parse_message(json.dumps(both))
    assert (parsed.created, parsed.not_created) == ((WANTED,), 1)
    deleted = parse_message(json.dumps(eventbridge(detail_type="Object Deleted")))
    assert (deleted.created, deleted.not_created) == ((), 1)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json at all", "not JSON"),
        ("[1, 2]", "JSON list"),
        ('{"hello": "world"}', "keys: hello"),
        (json.dumps({"Records": "x"}), "Records is not a list"),
        (json.dumps({"Records": [{"eventSource": "aws:sqs"}]}), "not an S3 event"),
        (json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]}), "key"),
        (json.dumps({**eventbridge(), "source": "aws.ec2"}), "aws.ec2"),
        (json.dumps({**sns_envelope(s3_body()), "Message": "<html>"}), "not JSON"),
        (json.dumps(sns_envelope(sns_envelope(s3_body()))), "inside an SNS envelope"),
    ],
)
def test_a_body_that_is_no_notification_says_what_it_is(body: str, says: str) -> None:
    with pytest.raises(MessageFormatError, match=says):
        parse_message(body)


def test_cloudtrail_kind_knows_the_layout_and_nothing_else() -> None:
    assert notifications.cloudtrail_kind(KEY) == "CloudTrail"
    assert notifications.cloudtrail_kind(log_key(DAY, "d", kind="CloudTrail-Digest")) == "CloudTrail-Digest"
    assert notifications.cloudtrail_kind("prefix/" + log_key(DAY, "i", kind="CloudTrail-Insight")) == (
        "CloudTrail-Insight"
    )
    for other in (
        f"AWSLogs/{ACCOUNT}/Config/us-east-1/2024/5/1/ConfigHistory/x.json.gz",
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/2024/05/01/x.log.gz",
        f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2024/05/01/",  # a folder marker
        "exports/report.csv",
        f"NotAWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2024/05/01/x.json.gz",
    ):
        assert notifications.cloudtrail_kind(other) is None, other


def test_plan_keeps_each_log_object_once_and_counts_the_rest() -> None:
    digest = log_key(DAY, "d", kind="CloudTrail-Digest")
    bodies = [
        s3_body(),
        sns_envelope(s3_body()),  # the same object by a second route
        eventbridge(),  # and a third
        s3_body(digest),
        s3_body("exports/report.csv"),
        s3_body(event="ObjectRemoved:Delete"),
        TEST_EVENT,
    ]
    plan = notifications.plan(parse_message(json.dumps(body)) for body in bodies)
    assert [(o.source, o.bucket, o.key, o.etag, o.size) for o in plan.objects] == [
        (f"s3://{BUCKET}/{KEY}", BUCKET, KEY, ETAG, 1024)
    ]
    assert plan.repeated == 2
    assert plan.skipped == {
        notifications.SKIP_DIGEST: 1,
        notifications.SKIP_NOT_CLOUDTRAIL: 1,
        notifications.SKIP_NOT_CREATED: 1,
    }
    # A new version of the object (another ETag) is another object.
    changed = s3_body()
    changed["Records"][0]["s3"]["object"]["eTag"] = "0" * 32
    assert (
        len(notifications.plan([parse_message(json.dumps(s3_body())), parse_message(json.dumps(changed))]).objects) == 2
    )
