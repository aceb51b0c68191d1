"""The parts of `keytrail demo` that need no orchestrator: a local AWS endpoint, the demo's bucket, topic and
queue, reading back what subscribers received, and the summary. The Prefect-running part is `flows/demo.py`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import select
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from rich import box
from rich.console import Console
from rich.table import Table

from pipeline import safe_text
from pipeline.alerting.alert import Alert, alert_order
from pipeline.alerting.messages import short_name
from pipeline.alerting.outbox import OutboxEntry
from pipeline.simulate.results import InjectedIncident

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

# An alert may start a little before the incident's first signature event (its window bucket) or after it.
_SLACK = dt.timedelta(hours=1)

_MARKER = ".keytrail-demo"  # marks a lake the demo made, so a rerun may replace it

DEMO_BUCKET = "keytrail-demo-trail"
DEMO_TOPIC = "keytrail-demo-alerts"
DEMO_QUEUE = "keytrail-demo-subscriber"


@contextlib.contextmanager
def scoped_environment(
    updates: Mapping[str, str], drop: Sequence[str] = (), env: MutableMapping[str, str] | None = None
) -> Iterator[None]:
    """Set `updates` (and remove `drop`) in the environment for the block; restore the previous values after."""
    env = os.environ if env is None else env
    saved = {name: env.get(name) for name in (*updates, *drop)}
    for name in drop:
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


def demo_environment() -> contextlib.AbstractContextManager[None]:
    """DEMO_ENVIRONMENT for the block, without any AWS profile/session/endpoint the user's shell had."""
    return scoped_environment(DEMO_ENVIRONMENT, drop=_DROPPED_VARIABLES)


# moto's server runs in a child process: in-process it would share one GIL with the ingest it serves (about
# half the throughput on 2 cores). The child prints its URL, then serves until its stdin closes, so it also
# goes away when the demo process dies.
_SERVER_SCRIPT = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()
server.stop()
"""
_START_TIMEOUT_S = 60.0


def terminate(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class LocalAws:
    """moto's server (S3, SNS, SQS) on 127.0.0.1 at a free port, in a child process; a context manager that
    always stops it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([self._process.stdout], [], [], _START_TIMEOUT_S)
        line = self._process.stdout.readline().strip() if ready and self._process.stdout else ""
        if not line.startswith("http://"):
            detail = self._stop_and_collect()
            raise RuntimeError(f"the local AWS endpoint (moto) did not start: {detail or 'no output'}")
        self.url = line
        log.info("moto server at %s (pid %d)", self.url, self._process.pid)
        return self.url

    def _stop_and_collect(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        terminate(process)  # nothing to save: the demo's AWS state lives only in that process
        if process.stdin:
            process.stdin.close()
        return (process.stderr.read() if process.stderr else "").strip()[-2000:]

    def stop(self) -> None:
        self._stop_and_collect()

    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prepare_lake(lake: Path) -> None:
    """Start from an empty lake: the simulated trail is the same every run (same keys, same etags), so an old
    lake would already hold every object and alert and the demo would show nothing new."""
    if lake.exists() and any(lake.iterdir()):
        if not (lake / _MARKER).exists():
            raise FileExistsError(
                f"{lake} exists and is not a demo lake: pass --lake with a new or empty folder (the demo replaces it)"
            )
        shutil.rmtree(lake)
    lake.mkdir(parents=True, exist_ok=True)
    (lake / _MARKER).write_text("made by `keytrail demo`; the next demo run replaces this folder\n")


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
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
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
    """What the outbox says was sent, against what the subscriber received, by alert_id."""

    expected: frozenset[str]
    received: frozenset[str]
    duplicates: tuple[str, ...]
    pending: tuple[str, ...]  # alerts not delivered: still pending (a publish failed) or failed for good

    @property
    def missing(self) -> frozenset[str]:
        return self.expected - self.received

    @property
    def unexpected(self) -> frozenset[str]:
        return self.received - self.expected

    @property
    def matches(self) -> bool:
        return not (self.missing or self.unexpected or self.duplicates or self.pending)


def expected_message_ids(entries: Sequence[OutboxEntry]) -> frozenset[str]:
    """The alert_id each SNS message should carry: a sent alert's own id, or its storm-cap summary's id.
    Suppressed alerts (same dedup key paged recently) send nothing."""
    ids = {e.alert.alert_id for e in entries if e.state == "sent" and e.delivery == "message"}
    ids |= {e.summary_id for e in entries if e.state == "sent" and e.delivery == "summary" and e.summary_id}
    return frozenset(ids)


def reconcile(entries: Sequence[OutboxEntry], messages: Sequence[ReceivedMessage]) -> Reconciliation:
    counts = Counter(m.alert_id for m in messages if m.alert_id)
    duplicates = tuple(sorted(alert_id for alert_id, n in counts.items() if n > 1))
    pending = tuple(e.alert.alert_id for e in entries if e.state in ("pending", "failed"))
    return Reconciliation(expected_message_ids(entries), frozenset(counts), duplicates, pending)


def _explains(alert: Alert, incident: InjectedIncident) -> bool:
    """Whether `alert` is the finding `incident` should produce: its detection, its principal (session or
    role; either side may have none, e.g. service events), overlapping its time."""
    same_principal = incident.principal_arn is None or alert.principal_arn is None
    return (
        alert.detection_id == incident.detection_id
        and (same_principal or incident.is_principal(alert.principal_arn))
        and alert.first_seen <= incident.end + _SLACK
        and alert.last_seen >= incident.start - _SLACK
    )


def incident_alerts(incidents: Sequence[InjectedIncident], alerts: Sequence[Alert]) -> dict[str, str | None]:
    """For each injected incident, the earliest alert explaining it; None when it was missed."""
    ordered = sorted(alerts, key=lambda a: a.first_seen)
    return {i.name: next((a.alert_id for a in ordered if _explains(a, i)), None) for i in incidents}


def alerts_table(entries: Sequence[OutboxEntry]) -> Table:
    title = f"Alerts in the outbox ({len(entries)})"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # Short facts keep their width; names give way with an ellipsis (full ARNs: `keytrail alerts show ID`).
    table.add_column("severity", no_wrap=True, min_width=8)
    table.add_column("first seen", no_wrap=True, min_width=11)
    table.add_column("alert_id", no_wrap=True, min_width=12)
    show_state = any(e.state != "sent" or e.delivery == "summary" for e in entries)
    if show_state:
        table.add_column("state", no_wrap=True, min_width=9)
    for column in ("detection", "principal", "resource"):
        table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=40)
    for entry in sorted(entries, key=lambda e: alert_order(e.alert)):
        alert = entry.alert
        state = ["sent (summary)" if entry.delivery == "summary" else entry.state] if show_state else []
        table.add_row(
            alert.severity.upper(),
            alert.first_seen.strftime("%m-%d %H:%M"),
            alert.alert_id[:12],
            *state,
            safe_text.terminal(alert.detection_id),
            safe_text.terminal(short_name(alert.principal_arn) or "-"),
            safe_text.terminal(short_name(alert.resource_arn) or "-"),
        )
    return table


def messages_table(messages: Sequence[ReceivedMessage]) -> Table:
    title = f"SNS messages received on the subscriber queue ({len(messages)})"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("alert_id", no_wrap=True, min_width=12)
    table.add_column("Subject", overflow="ellipsis", no_wrap=True)
    for message in sorted(messages, key=lambda m: (m.subject, m.alert_id or "")):
        table.add_row(safe_text.terminal((message.alert_id or "-")[:12]), safe_text.terminal(message.subject))
    return table


def incidents_table(found: Mapping[str, str | None], incidents: Sequence[InjectedIncident]) -> Table:
    title = f"Injected incidents found ({sum(bool(v) for v in found.values())}/{len(found)})"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("incident", "expected detection", "alert_id"):
        table.add_column(column)
    for incident in incidents:
        alert_id = found.get(incident.name)
        table.add_row(
            incident.name, incident.detection_id, safe_text.markup(alert_id[:12]) if alert_id else "[red]missed"
        )
    return table


def next_commands(lake: str, top: Alert | None = None) -> list[str]:
    """What to try next on the demo lake, filled in with the most severe alert when there is one."""
    alert_id = top.alert_id[:12] if top else "<alert_id>"
    principal = (top.principal_arn if top else None) or "<principal ARN>"
    sql = "SELECT event_name, count(*) AS calls FROM events GROUP BY ALL ORDER BY calls DESC"
    return [
        f"uv run keytrail alerts list --lake {lake}",
        f"uv run keytrail alerts show {alert_id} --lake {lake}",
        f"uv run keytrail query run alert_evidence --lake {lake} --param alert_id={alert_id}",
        f"uv run keytrail query run principal_activity --lake {lake} --param principal={principal} --since -9d",
        f'uv run keytrail sql --lake {lake} "{sql}"',
        f"uv run keytrail report --lake {lake} --since -9d --until now --out report.html",
        f"KEYTRAIL_LAKE={lake} uv run --with jupyterlab jupyter lab notebooks/overview.ipynb",
    ]


def render_summary(
    console: Console,
    *,
    entries: Sequence[OutboxEntry],
    messages: Sequence[ReceivedMessage],
    incidents: Sequence[InjectedIncident],
    facts: Mapping[str, Any],
    lake: str,
) -> Reconciliation:
    """Print the alerts, the messages, whether they match, the incidents found, and the next commands."""
    console.print(alerts_table(entries))
    console.print(messages_table(messages))
    result = reconcile(entries, messages)
    if result.matches:
        console.print(
            f"[green]SNS messages match the outbox: {len(result.expected)} messages expected, "
            "each received exactly once."
        )
    else:
        console.print(
            f"[red]SNS messages do not match the outbox: {len(result.missing)} missing, {len(result.unexpected)} "
            f"unexpected, {len(result.duplicates)} duplicated, {len(result.pending)} undelivered (pending or failed) "
            f"(`keytrail alerts list --lake {safe_text.markup(lake)}` shows why)."
        )
    console.print(incidents_table(incident_alerts(incidents, [e.alert for e in entries]), incidents))
    facts_table = Table(show_header=False, box=None)
    for name, value in facts.items():
        facts_table.add_row(f"[bold]{safe_text.markup(name)}", safe_text.terminal(value))
    console.print(facts_table)
    console.print(f"\nThe lake is in [bold]{safe_text.markup(lake)}[/]. Try next:")
    top = min((e.alert for e in entries), key=alert_order, default=None)
    for command in next_commands(lake, top):
        # No markup, but visible: the commands hold the top alert's principal, from the trail.
        console.print(f"  {safe_text.visible(command)}", soft_wrap=True, highlight=False, markup=False)
    return result
