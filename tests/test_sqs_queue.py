"""The SQS edge without a server: naming a queue, and what an SQS error tells the user to do."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from pipeline.sqs_queue import QueueError, parse_queue_ref, queue_fault


@pytest.mark.parametrize(
    ("text", "url", "name", "account", "region"),
    [
        (
            "sqs://sqs.eu-west-1.amazonaws.com/123456789012/trail-events",
            None,  # looked up by name and account, in the region of the host
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
        ("sqs://127.0.0.1:5000/123456789012/q", None, "q", "123456789012", None),
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


def _error(code: str, query_code: str | None = None) -> ClientError:
    error = {"Code": code, "Message": "refused", **({"QueryErrorCode": query_code} if query_code else {})}
    return ClientError({"Error": error}, "ReceiveMessage")


@pytest.mark.parametrize(
    ("code", "query_code", "says"),
    [
        ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "no such queue: check the URL or name"),
        ("AccessDenied", None, "sqs:ReceiveMessage, sqs:ChangeMessageVisibility and sqs:DeleteMessage"),
        ("KMS.AccessDeniedException", None, "kms:Decrypt"),
        ("RequestThrottled", None, "SQS error RequestThrottled: refused; rerun once fixed"),
    ],
)
def test_sqs_errors_say_what_to_do_next(code: str, query_code: str | None, says: str) -> None:
    assert says in str(queue_fault(_error(code, query_code), "sqs://trail-events"))
