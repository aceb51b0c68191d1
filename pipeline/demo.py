"""The parts of `keytrail demo` that need no orchestrator: a local AWS endpoint, the demo's bucket, topic and
queue, reading back what subscribers received, and the summary. The Prefect-running part is `flows/demo.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from pipeline.alerts import SEVERITY_RANK, Alert

log = logging.getLogger(__name__)

# Set before prefect or boto3 is imported. Dummy credentials: the demo only ever talks to its own loopback
# endpoint, and without any credentials boto3 would probe the EC2 metadata address.
DEMO_ENVIRONMENT: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "keytrail-demo",
    "AWS_SECRET_ACCESS_KEY": "keytrail-demo",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # Prefect phones home and, when it cannot, logs an ERROR (and a "database is locked" on a fresh DB).
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The 20 s default timed out once under load on 2 cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # The library logs with logging.getLogger("pipeline..."); this routes those lines into Prefect's logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
}
_DROPPED_VARIABLES: tuple[str, ...] = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")

DEMO_BUCKET = "keytrail-demo-trail"
DEMO_TOPIC = "keytrail-demo-alerts"
DEMO_QUEUE = "keytrail-demo-subscriber"


@contextlib.contextmanager
def demo_environment(
    extra: Mapping[str, str] | None = None, env: MutableMapping[str, str] | None = None
) -> Iterator[None]:
    """Apply DEMO_ENVIRONMENT (+ `extra`, e.g. KEYTRAIL_ENDPOINT_URL) and restore the previous values after."""
    env = os.environ if env is None else env
    updates = {**DEMO_ENVIRONMENT, **(extra or {})}
    saved = {name: env.get(name) for name in (*updates, *_DROPPED_VARIABLES)}
    for name in _DROPPED_VARIABLES:
        env.pop(name, None)
    env.update(updates)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value


class LocalAws:
    """moto's server (S3, SNS, SQS) on 127.0.0.1 at a free port; a context manager that always stops it."""

    def __init__(self) -> None:
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO, even with verbose=False.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class DemoResources:
    bucket: str
    topic_arn: str
    queue_url: str


def create_resources(
    s3: Any, sns: Any, sqs: Any, *, bucket: str = DEMO_BUCKET, topic: str = DEMO_TOPIC, queue: str = DEMO_QUEUE
) -> DemoResources:
    """The trail bucket, the alert topic, and a queue subscribed to the topic (an on-call subscriber)."""
    s3.create_bucket(Bucket=bucket)
    topic_arn = sns.create_topic(Name=topic)["TopicArn"]
    queue_url = sqs.create_queue(QueueUrl=queue, QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return DemoResources(bucket=bucket, topic_arn=topic_arn, queue_url=queue_url)


@dataclass(frozen=True)
class ReceivedMessage:
    """One SNS notification as an SQS subscriber got it (the standard SNS JSON envelope)."""

    message_id: str
    subject: str
    alert_id: str | None
    severity: str | None
    detection_id: str | None
    body: Mapping[str, Any]


def parse_envelope(raw_body: str) -> ReceivedMessage:
    """Read the SNS envelope delivered to SQS: Subject, the alert JSON in Message, and the attributes."""
    envelope = msgspec.json.decode(raw_body)
    attributes = {name: value.get("Value") for name, value in (envelope.get("MessageAttributes") or {}).items()}
    try:
        body = msgspec.json.decode(envelope.get("Message") or "{}")
    except msgspec.DecodeError:
        body = {"text": envelope.get("Message")}  # e.g. a storm-cap summary written as plain text
    body = body if isinstance(body, dict) else {"value": body}
    return ReceivedMessage(
        message_id=envelope.get("MessageId", ""),
        subject=envelope.get("Subject") or "",
        alert_id=attributes.get("alert_id") or body.get("alert_id"),
        severity=attributes.get("severity") or body.get("severity"),
        detection_id=attributes.get("detection_id") or body.get("detection_id"),
        body=body,
    )


def receive_all(sqs: Any, queue_url: str, *, idle_polls: int = 2, timeout: float = 30.0) -> list[ReceivedMessage]:
    """Drain the queue: receive (and delete) until it has been empty for `idle_polls` polls in a row."""
    received: list[ReceivedMessage] = []
    empty = 0
    deadline = time.monotonic() + timeout
    while empty < idle_polls and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = reply.get("Messages", [])
        empty = 0 if messages else empty + 1
        for message in messages:
            received.append(parse_envelope(message["Body"]))
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
    log.info("received %d SNS messages on %s", len(received), queue_url)
    return received


@dataclass(frozen=True)
class Reconciliation:
    """Alerts in the outbox against what the subscriber received, by alert_id."""

    alert_ids: frozenset[str]
    received_ids: frozenset[str]
    duplicates: tuple[str, ...]

    @property
    def missing(self) -> frozenset[str]:
        return self.alert_ids - self.received_ids

    @property
    def unexpected(self) -> frozenset[str]:
        return self.received_ids - self.alert_ids

    @property
    def matches(self) -> bool:
        return not self.missing and not self.unexpected and not self.duplicates


def reconcile(alert_ids: Sequence[str], messages: Sequence[ReceivedMessage]) -> Reconciliation:
    counts = Counter(m.alert_id for m in messages if m.alert_id)
    duplicates = tuple(sorted(alert_id for alert_id, n in counts.items() if n > 1))
    return Reconciliation(frozenset(alert_ids), frozenset(counts), duplicates)


def alerts_table(alerts: Sequence[Alert]) -> Table:
    table = Table(title=f"Alerts in the outbox ({len(alerts)})", title_justify="left")
    for column in ("severity", "detection", "principal", "resource", "first seen (UTC)", "events", "alert_id"):
        table.add_column(column, overflow="fold")
    ordered = sorted(alerts, key=lambda a: (-SEVERITY_RANK[a.severity], a.first_seen, a.alert_id))
    for alert in ordered:
        table.add_row(
            alert.severity.upper(),
            alert.detection_id,
            _short_arn(alert.principal_arn),
            _short_arn(alert.resource_arn),
            alert.first_seen.strftime("%Y-%m-%d %H:%M"),
            str(alert.event_count),
            alert.alert_id[:12],
        )
    return table


def messages_table(messages: Sequence[ReceivedMessage]) -> Table:
    table = Table(title=f"SNS messages received on the subscriber queue ({len(messages)})", title_justify="left")
    for column in ("subject", "severity attr", "alert_id attr"):
        table.add_column(column, overflow="fold")
    for message in sorted(messages, key=lambda m: (m.subject, m.alert_id or "")):
        table.add_row(message.subject, message.severity or "-", (message.alert_id or "-")[:12])
    return table


def _short_arn(arn: str | None) -> str:
    # The last path segment is what a human recognises (role or key name); the full ARN is in the alert JSON.
    if not arn:
        return "-"
    return arn.rsplit("/", 1)[-1] if "/" in arn else arn.rsplit(":", 1)[-1]


def next_commands(lake: str) -> list[str]:
    """What to try next on the demo lake."""
    return [
        f"uv run keytrail alerts list --lake {lake}",
        f"uv run keytrail query list --lake {lake}",
        f"uv run keytrail query run principal_activity --lake {lake} --param principal_arn=<an ARN above>",
        f'uv run keytrail sql --lake {lake} "SELECT event_name, count(*) FROM events GROUP BY ALL ORDER BY 2 DESC"',
        f"uv run keytrail detect --lake {lake} --since -24h --format json",
        f"KEYTRAIL_LAKE={lake} uv run jupyter lab notebooks/overview.ipynb notebooks/investigate.ipynb",
    ]


def render_summary(
    console: Console,
    *,
    alerts: Sequence[Alert],
    messages: Sequence[ReceivedMessage],
    facts: Mapping[str, Any],
    lake: str,
) -> Reconciliation:
    """Print the alerts, the messages, whether they match, and the next commands. Returns the reconciliation."""
    console.print(alerts_table(alerts))
    console.print(messages_table(messages))
    result = reconcile([a.alert_id for a in alerts], messages)
    if result.matches:
        console.print(f"[green]SNS messages match the outbox: {len(result.alert_ids)} alerts, each delivered once.")
    else:
        console.print(
            f"[red]SNS messages do not match the outbox: {len(result.missing)} missing, "
            f"{len(result.unexpected)} unexpected, {len(result.duplicates)} duplicated."
        )
    facts_table = Table(show_header=False, box=None)
    for name, value in facts.items():
        facts_table.add_row(f"[bold]{name}", str(value))
    console.print(facts_table)
    console.print(f"\nThe lake is in [bold]{lake}[/]. Try next:")
    for command in next_commands(lake):
        console.print(f"  {command}", soft_wrap=True, highlight=False)
    return result
