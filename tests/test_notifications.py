"""Parsing S3 event notifications (pure): the three routes to SQS, test events, keys, what is skipped."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from trails import ACCOUNT, ORG, log_key

from pipeline import notifications
from pipeline.notifications import MessageFormatError, NotifiedObject, parse_message
from pipeline.sqs_queue import QueueError, parse_queue_ref

BUCKET = "org-trail-bucket"
DAY = dt.date(2024, 5, 1)
KEY = log_key(DAY, "20240501T0005Z_abc", org=ORG)
ETAG = "9dd4e461268c8034f5c8564e155c67a6"


def s3_body(key: str = KEY, event: str = "ObjectCreated:Put", encoded: str | None = None) -> dict[str, Any]:
    """What S3 sends to SQS (and SNS): the key URL-encoded the way S3 encodes it."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T00:10:02.120Z",
                "eventName": event,
                "userIdentity": {"principalId": "AWS:AROAEXAMPLE:regionalDeliverySession"},
                "requestParameters": {"sourceIPAddress": "10.0.0.1"},
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8x"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "keytrail",
                    "bucket": {
                        "name": BUCKET,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{BUCKET}",
                    },
                    "object": {
                        "key": encoded if encoded is not None else key,
                        "size": 1024,
                        "eTag": ETAG,
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


def sns_envelope(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:trail-events",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2024-05-01T00:10:02.200Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+..",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def eventbridge(key: str = KEY, detail_type: str = "Object Created") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2024-05-01T00:10:02Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": {"key": key, "size": 1024, "etag": ETAG, "sequencer": "617f08299329d189"},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "cloudtrail.amazonaws.com",
            "reason": "PutObject",
        },
    }


TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2024-05-01T00:00:00.000Z",
    "Bucket": BUCKET,
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}
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


@pytest.mark.parametrize(
    ("text", "url", "name", "account", "region"),
    [
        (
            "sqs://sqs.eu-west-1.amazonaws.com/123456789012/trail-events",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/trail-events",
            "trail-events",
            "123456789012",
            "eu-west-1",
        ),
        (
            "https://sqs.us-gov-west-1.amazonaws.com/123456789012/q",
            "https://sqs.us-gov-west-1.amazonaws.com/123456789012/q",
            "q",
            "123456789012",
            "us-gov-west-1",
        ),
        (
            "https://ap-southeast-2.queue.amazonaws.com/123456789012/q",
            "https://ap-southeast-2.queue.amazonaws.com/123456789012/q",
            "q",
            "123456789012",
            "ap-southeast-2",
        ),
        ("http://127.0.0.1:5000/123456789012/q", "http://127.0.0.1:5000/123456789012/q", "q", "123456789012", None),
        ("sqs://123456789012/trail-events", None, "trail-events", "123456789012", None),
        ("sqs://trail-events", None, "trail-events", None, None),
        ("trail-events", None, "trail-events", None, None),
    ],
)
def test_queue_references(text: str, url: str | None, name: str, account: str | None, region: str | None) -> None:
    ref = parse_queue_ref(text)
    assert (ref.url, ref.name, ref.account, ref.region) == (url, name, account, region)


@pytest.mark.parametrize("text", ["sqs://", "sqs:// ", "https://sqs.us-east-1.amazonaws.com/"])
def test_a_reference_naming_no_queue_says_how_to_write_one(text: str) -> None:
    with pytest.raises(QueueError, match="sqs://QUEUE-URL"):
        parse_queue_ref(text)
