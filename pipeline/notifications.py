"""S3 event notifications, as an SQS message body, -> the CloudTrail objects they name. Pure functions.

Three ways an object-created notification reaches the queue, plus the bodies that are not notifications:

* **S3 -> SQS** (and SNS with raw message delivery): `{"Records": [{"eventSource": "aws:s3", "eventName":
  "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object": {"key", "size", "eTag"}}}]}`. S3 URL-encodes the
  key (`red flower.jpg` -> `red+flower.jpg`, `:` -> `%3A`): it is decoded with `unquote_plus`.
* **S3 -> SNS -> SQS**: the SNS envelope `{"Type": "Notification", "TopicArn", "Message": "<the S3 body as a
  JSON string>"}`; the inner body is parsed like any other (so EventBridge -> SNS -> SQS works too).
* **S3 -> EventBridge -> SQS**: `{"detail-type": "Object Created", "source": "aws.s3", "detail": {"bucket":
  {"name"}, "object": {"key", "size", "etag"}}}`. EventBridge passes the key as written (not URL-encoded).
* `s3:TestEvent` (S3 sends one when a notification configuration is saved) and SNS subscription
  confirmations: nothing to ingest, acknowledged.

A body that is none of these raises `MessageFormatError`: the drain leaves it on the queue, so a message that
keeps failing ends in the queue's dead-letter queue. Records that are not object creations (ObjectRemoved,
"Object Deleted", tagging) and keys that are not CloudTrail log files (digests, Insights, other prefixes of a
shared bucket) are acknowledged and counted, never read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import msgspec

from pipeline.s3 import DIGEST_KIND, INSIGHT_KIND, LogObject

SHAPE_S3 = "s3"
SHAPE_SNS = "sns"
SHAPE_EVENTBRIDGE = "eventbridge"
SHAPE_TEST = "s3-test-event"
SHAPE_SNS_CONTROL = "sns-control"  # SubscriptionConfirmation / UnsubscribeConfirmation

# Why a named object is acknowledged without being read.
SKIP_NOT_CREATED = "not an object creation"
SKIP_DIGEST = "CloudTrail digest or Insight file"
SKIP_NOT_CLOUDTRAIL = "not a CloudTrail log file"

# An SNS envelope inside an SNS envelope is not something AWS sends; one level of nesting is all we follow.
_MAX_DEPTH = 2

# <anything>/AWSLogs/[o-xxxx/]<account>/<kind>/<region>/YYYY/MM/DD/<file>: the layout CloudTrail writes.
_CLOUDTRAIL_KEY = re.compile(
    r"(?:^|/)AWSLogs/(?:o-[a-z0-9]{10,32}/)?\d{6,16}/"
    r"(?P<kind>CloudTrail|CloudTrail-Digest|CloudTrail-Insight)/[a-z0-9-]+/\d{4}/\d{2}/\d{2}/[^/]+$"
)


class MessageFormatError(ValueError):
    """The body is not an S3 notification in any shape keytrail knows; the message says what was found."""


@dataclass(frozen=True)
class NotifiedObject:
    """One object a notification names (key decoded)."""

    bucket: str
    key: str
    etag: str
    size: int


@dataclass(frozen=True)
class Notification:
    """What one SQS message body says: its shape, the objects created, and what it names but does not create."""

    shape: str
    created: tuple[NotifiedObject, ...] = ()
    not_created: int = 0  # records / events about something other than a creation


@dataclass
class Plan:
    """What a batch of notifications asks for: the log objects to ingest (each once) and what is skipped."""

    objects: list[LogObject] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    repeated: int = 0  # an object named more than once in the batch (redelivery, two routes)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


def parse_message(body: str | bytes) -> Notification:
    """The notification in an SQS message body (any of the shapes above). Raises MessageFormatError."""
    return _parse(_decode(body), 0)


def _decode(body: str | bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MessageFormatError(f"the body is not JSON ({exc})") from None


def _parse(document: Any, depth: int) -> Notification:
    if not isinstance(document, dict):
        raise MessageFormatError(f"the body is a JSON {type(document).__name__}, not an object")
    if "Records" in document:
        return _s3_records(document["Records"])
    if document.get("Event") == "s3:TestEvent":
        return Notification(SHAPE_TEST)
    if "detail-type" in document and "detail" in document:
        return _eventbridge(document)
    if "Type" in document and "TopicArn" in document:
        return _sns(document, depth)
    raise MessageFormatError(f"not an S3 notification, SNS envelope or EventBridge event (keys: {_keys(document)})")


def _keys(document: dict[str, Any]) -> str:
    return ", ".join(sorted(str(key) for key in document)[:8]) or "none"


def _sns(document: dict[str, Any], depth: int) -> Notification:
    kind = document.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return Notification(SHAPE_SNS_CONTROL)
    inner = document.get("Message")
    if kind != "Notification" or not isinstance(inner, str):
        raise MessageFormatError(f"an SNS envelope of type {kind!r} without a Message string")
    if depth >= _MAX_DEPTH - 1:
        raise MessageFormatError("an SNS envelope inside an SNS envelope")
    parsed = _parse(_decode(inner), depth + 1)
    return parsed if parsed.shape == SHAPE_TEST else Notification(SHAPE_SNS, parsed.created, parsed.not_created)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MessageFormatError(f"{what} is missing or not a string")
    return value


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _object(bucket: Any, obj: Any, key: str) -> NotifiedObject:
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise MessageFormatError("the bucket or object of a record is not an object")
    etag = obj.get("eTag", obj.get("etag", ""))
    return NotifiedObject(
        bucket=_text(bucket.get("name"), "the bucket name"),
        key=key,
        etag=etag.strip('"') if isinstance(etag, str) else "",
        size=_size(obj.get("size")),
    )


def _s3_records(records: Any) -> Notification:
    if not isinstance(records, list):
        raise MessageFormatError("Records is not a list")
    created: list[NotifiedObject] = []
    other = 0
    for item in records:
        if not isinstance(item, dict) or item.get("eventSource") != "aws:s3":
            raise MessageFormatError("a record that is not an S3 event (eventSource is not aws:s3)")
        name = item.get("eventName")
        if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
            other += 1
            continue
        s3 = item.get("s3")
        if not isinstance(s3, dict):
            raise MessageFormatError("an S3 record without its s3 section")
        obj = s3.get("object")
        key = unquote_plus(_text(obj.get("key") if isinstance(obj, dict) else None, "the object key"))
        created.append(_object(s3.get("bucket"), obj, key))
    return Notification(SHAPE_S3, tuple(created), other)


def _eventbridge(document: dict[str, Any]) -> Notification:
    if document.get("source") != "aws.s3":
        raise MessageFormatError(f"an EventBridge event from {document.get('source')!r}, not aws.s3")
    if document.get("detail-type") != "Object Created":
        return Notification(SHAPE_EVENTBRIDGE, (), 1)
    detail = document["detail"]
    if not isinstance(detail, dict):
        raise MessageFormatError("an EventBridge event whose detail is not an object")
    obj = detail.get("object")
    key = _text(obj.get("key") if isinstance(obj, dict) else None, "the object key")
    return Notification(SHAPE_EVENTBRIDGE, (_object(detail.get("bucket"), obj, key),))


def cloudtrail_kind(key: str) -> str | None:
    """CloudTrail, CloudTrail-Digest or CloudTrail-Insight for a key in CloudTrail's layout; None otherwise."""
    found = _CLOUDTRAIL_KEY.search(key)
    return found.group("kind") if found else None


def log_object(notified: NotifiedObject) -> LogObject:
    """The object as ingest knows it: the identity a listing gives it too (bucket, key, ETag without quotes),
    so an object ingested from a notification is skipped by a later listing run, and the reverse."""
    return LogObject(
        source=f"s3://{notified.bucket}/{notified.key}",
        bucket=notified.bucket,
        key=notified.key,
        etag=notified.etag,
        size=notified.size,
    )


def plan(notifications: Iterable[Notification]) -> Plan:
    """The objects a batch of notifications names, in order, each once, with the skipped ones counted."""
    result = Plan()
    seen: set[tuple[str, str, str]] = set()
    for notification in notifications:
        result.skip(SKIP_NOT_CREATED, notification.not_created)
        for notified in notification.created:
            kind = cloudtrail_kind(notified.key)
            if kind is None:
                result.skip(SKIP_NOT_CLOUDTRAIL)
            elif kind in (DIGEST_KIND, INSIGHT_KIND):
                result.skip(SKIP_DIGEST)
            elif (identity := (notified.bucket, notified.key, notified.etag)) in seen:
                result.repeated += 1
            else:
                seen.add(identity)
                result.objects.append(log_object(notified))
    return result
