"""The SQS side of notification-driven ingest: find the queue, receive, extend, delete.   [I/O edge]

A queue is named as `sqs://QUEUE` or `--queue QUEUE`, where QUEUE is its URL (`https://sqs.us-east-1.
amazonaws.com/123456789012/trail-events`, with or without the scheme), `ACCOUNT/NAME` or just its name (looked
up with GetQueueUrl in the client's region). The region of an AWS queue URL is taken from its host.

Receiving uses long polling (WaitTimeSeconds) and batches of 10 (the most SQS returns per call). While a batch
is worked on, `Heartbeat` keeps its messages invisible (ChangeMessageVisibilityBatch every third of the
visibility timeout), so a slow batch is never handed to a second consumer; messages are deleted only after the
caller says so (after the lake commit). SQS errors become `QueueError`, one line saying what to do next.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

MAX_RECEIVE = 10  # SQS returns at most 10 messages per ReceiveMessage, and takes 10 entries per batch call
MAX_WAIT_SECONDS = 20  # the longest long poll SQS allows
MAX_VISIBILITY_SECONDS = 43_200  # 12 h: SQS's ceiling for a visibility timeout

_REGION = re.compile(r"(?:^|\.)(?:sqs(?:-fips)?\.)?(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)\.(?:queue\.)?amazonaws\.com")
_ACCESS_CODES = ("AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.AccessDenied", "InvalidClientTokenId")
_MISSING_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue")


class QueueError(RuntimeError):
    """The queue cannot be used (missing, no permission, unreachable): the message says what to do next."""


@dataclass(frozen=True)
class QueueRef:
    """A queue as the user named it: its URL when given with its scheme, else its name, the owner account and
    the host when given (looked up with GetQueueUrl, so a local endpoint answers with its own URL)."""

    text: str
    url: str | None
    name: str
    account: str | None = None
    host: str | None = None

    @property
    def region(self) -> str | None:
        """The region in an AWS queue URL's host; None for a name or a local endpoint."""
        host = self.host if self.url is None else self.url.split("://", 1)[1].split("/", 1)[0]
        found = _REGION.search(host or "")
        return found.group("region") if found else None


@dataclass(frozen=True)
class Queue:
    """A resolved queue: its URL and what the drain needs from its attributes."""

    url: str
    arn: str
    visibility_seconds: int
    dead_letter_arn: str | None = None  # from the redrive policy
    max_receive_count: int | None = None


@dataclass(frozen=True)
class Received:
    """One received message: what the drain needs to parse it and acknowledge it."""

    message_id: str
    receipt: str
    body: str
    receive_count: int


def parse_queue_ref(text: str) -> QueueRef:
    """`sqs://...` or a `--queue` value -> QueueRef. Raises QueueError for something that names no queue."""
    rest = text.removeprefix("sqs://").strip()
    scheme, _, path = rest.partition("://") if "://" in rest else ("", "", rest)
    parts = [part for part in path.split("/") if part]
    host = parts[0] if len(parts) >= 3 else None  # host/account/name
    if not parts or (scheme and host is None):
        raise QueueError(
            f"{text!r} names no queue: use sqs://QUEUE-URL, sqs://ACCOUNT/NAME or sqs://NAME "
            "(e.g. sqs://sqs.us-east-1.amazonaws.com/123456789012/cloudtrail-notifications)"
        )
    account = parts[-2] if len(parts) >= 2 else None
    return QueueRef(text, rest if scheme else None, parts[-1], account, host)


def queue_fault(exc: ClientError, where: str) -> QueueError:
    """The QueueError for an SQS client error, saying what to do next."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    if code in _MISSING_CODES or error.get("QueryErrorCode") == "QueueDoesNotExist":
        return QueueError(
            f"{where}: no such queue: check the URL or name, its region (taken from the URL, else "
            "KEYTRAIL_REGION / AWS_DEFAULT_REGION) and --endpoint-url"
        )
    if code in _ACCESS_CODES or code.startswith("KMS."):
        return QueueError(
            f"{where}: access denied ({code}): the credentials need sqs:GetQueueUrl, sqs:GetQueueAttributes, "
            "sqs:ReceiveMessage, sqs:ChangeMessageVisibility and sqs:DeleteMessage on the queue (kms:Decrypt "
            "too when it is encrypted with a KMS key)"
        )
    return QueueError(f"{where}: SQS error {code or 'unknown'}: {error.get('Message') or exc}; rerun once fixed")


def _redrive(attributes: dict[str, str]) -> tuple[str | None, int | None]:
    try:
        policy = json.loads(attributes.get("RedrivePolicy") or "{}")
        return policy.get("deadLetterTargetArn"), int(policy["maxReceiveCount"])
    except (ValueError, KeyError, TypeError):
        return None, None


def open_queue(client: Any, ref: QueueRef) -> Queue:
    """Resolve `ref` to a queue and read its visibility timeout and redrive policy. Raises QueueError."""
    try:
        url = ref.url
        if url is None:
            kwargs = {"QueueOwnerAWSAccountId": ref.account} if ref.account else {}
            url = client.get_queue_url(QueueName=ref.name, **kwargs)["QueueUrl"]
        wanted = ["QueueArn", "VisibilityTimeout", "RedrivePolicy"]
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=wanted).get("Attributes", {})
    except ClientError as exc:
        raise queue_fault(exc, ref.text) from None
    dead_letter, max_receives = _redrive(attributes)
    return Queue(
        url=url,
        arn=attributes.get("QueueArn", ""),
        visibility_seconds=int(attributes.get("VisibilityTimeout", 30)),
        dead_letter_arn=dead_letter,
        max_receive_count=max_receives,
    )


def receive(client: Any, queue: Queue, count: int, wait_seconds: int, visibility_seconds: int) -> list[Received]:
    """Up to `count` (<= 10) messages, waiting up to `wait_seconds` for the first (long polling)."""
    try:
        response = client.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=max(1, min(count, MAX_RECEIVE)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
    except ClientError as exc:
        raise queue_fault(exc, queue.url) from None
    return [
        Received(
            message_id=message["MessageId"],
            receipt=message["ReceiptHandle"],
            body=message.get("Body", ""),
            receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
        )
        for message in response.get("Messages", [])
    ]


def _chunks(messages: Sequence[Received]) -> Iterator[Sequence[Received]]:
    for start in range(0, len(messages), MAX_RECEIVE):
        yield messages[start : start + MAX_RECEIVE]


def _batch_call(call: Callable[..., dict[str, Any]], queue: Queue, entries: list[dict[str, Any]]) -> int:
    """Run a *Batch call; the number of entries SQS refused (logged: they come back on the queue)."""
    try:
        response = call(QueueUrl=queue.url, Entries=entries)
    except ClientError as exc:
        raise queue_fault(exc, queue.url) from None
    failed = response.get("Failed", [])
    for entry in failed:
        log.warning("%s: entry %s refused: %s", queue.url, entry.get("Id"), entry.get("Message") or entry.get("Code"))
    return len(failed)


def delete(client: Any, queue: Queue, messages: Sequence[Received]) -> int:
    """Delete the messages (after their batch is committed); the number SQS did not delete."""
    refused = 0
    for chunk in _chunks(messages):
        entries = [{"Id": str(index), "ReceiptHandle": m.receipt} for index, m in enumerate(chunk)]
        refused += _batch_call(client.delete_message_batch, queue, entries)
    return refused


def set_visibility(client: Any, queue: Queue, messages: Sequence[Received], seconds: int) -> int:
    """Make the messages invisible for `seconds` from now (0 = visible again at once); the number refused."""
    refused = 0
    for chunk in _chunks(messages):
        entries = [
            {"Id": str(index), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds}
            for index, m in enumerate(chunk)
        ]
        refused += _batch_call(client.change_message_visibility_batch, queue, entries)
    return refused


class Heartbeat:
    """While the `with` block runs, re-extend the messages' visibility every third of `visibility_seconds`.

    A failed extension is logged, not raised: the worst case is a second consumer ingesting the same objects,
    which the lake's ledger and event-id check turn into nothing.
    """

    def __init__(self, client: Any, queue: Queue, messages: Sequence[Received], visibility_seconds: int) -> None:
        self.client = client
        self.queue = queue
        self.messages = list(messages)
        self.visibility = visibility_seconds
        self.extensions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-heartbeat", daemon=True)

    def _run(self) -> None:
        interval = max(self.visibility / 3, 0.2)
        while not self._stop.wait(interval):
            try:
                set_visibility(self.client, self.queue, self.messages, self.visibility)
                self.extensions += 1
            except (QueueError, BotoCoreError) as exc:
                log.warning("could not extend the visibility of %d messages: %s", len(self.messages), exc)

    def __enter__(self) -> Heartbeat:
        if self.messages:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
