"""Real-shaped SQS message bodies of S3 event notifications, by route (AWS's documented examples, trimmed)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from trails import ACCOUNT, ORG, log_key

BUCKET = "org-trail-bucket"
DAY = dt.date(2024, 5, 1)
KEY = log_key(DAY, "20240501T0005Z_abc", org=ORG)
ETAG = "9dd4e461268c8034f5c8564e155c67a6"


def s3_body(
    key: str = KEY,
    event: str = "ObjectCreated:Put",
    encoded: str | None = None,
    bucket: str = BUCKET,
    etag: str = ETAG,
) -> dict[str, Any]:
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
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": encoded if encoded is not None else key,
                        "size": 1024,
                        "eTag": etag,
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
