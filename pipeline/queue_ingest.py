"""Ingest driven by S3 event notifications: drain an SQS queue into the lake, batch by batch.

Each round receives up to `batch_messages` messages (long polling, 10 per call), parses them
(`notifications`), hands the CloudTrail log objects they name to `ingest.ingest_objects` (the same run a
listing feeds: ledger, event-id check, quarantine, commit) and deletes the messages only once that run has
committed. Memory is bounded by the batch, whatever the backlog: the queue is never read ahead.

Exactly once, whatever SQS does: a message delivered twice, an object named by two routes (S3 -> SQS and
EventBridge), or a notification for an object a listing run already ingested: the lake's ledger knows the
object (bucket, key, ETag) and its event-id check knows the events, so each event is kept once.

What fails, and what happens to it:

* a body that is no notification, or an object that cannot be fetched (deleted, access denied): the message
  stays on the queue (visible again after `retry_delay_seconds`); the rest of its batch is committed and
  deleted (a failing batch is retried message by message to find it). SQS moves a message that keeps failing
  to the queue's dead-letter queue (its redrive policy's maxReceiveCount); without one, a message received
  `max_receives` times or more is reported as poison (`QueueReport.poison`) and left on the queue.
* a bad object (corrupt gzip, not CloudTrail JSON) is not a failure: ingest quarantines it, the message is
  deleted.
* a fault of the run (the lake cannot be written: `RunFault`; no credentials or no network) stops the drain;
  the batch in progress is neither committed nor deleted and comes back after its visibility timeout.

Notifications can be lost (a misconfigured filter, a queue purged, messages expired): a listing run over
recent day prefixes (`keytrail ingest s3://...`) is the reconciliation backstop and skips everything the
queue already brought in.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from pipeline import ingest, notifications, safe_text, sqs_queue
from pipeline.events import DEFAULT_SOURCES
from pipeline.ingest import IngestReport
from pipeline.notifications import MessageFormatError, Notification
from pipeline.queue_report import DrainOptions, QueueReport
from pipeline.sqs_queue import Queue, Received

log = logging.getLogger(__name__)


@dataclass
class _Batch:
    """One round's messages, sorted into parsed ones and failures."""

    parsed: list[tuple[Received, Notification]] = field(default_factory=list)
    failed: list[tuple[Received, str]] = field(default_factory=list)


def _parse(messages: list[Received]) -> _Batch:
    batch = _Batch()
    for message in messages:
        try:
            batch.parsed.append((message, notifications.parse_message(message.body)))
        except MessageFormatError as exc:
            batch.failed.append((message, f"not an S3 notification: {exc}"))
    return batch


def _s3_failure(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    operation = getattr(exc, "operation_name", "S3")
    return f"{operation} failed: {error.get('Code', 'error')} ({error.get('Message', '')})"


IngestCall = Callable[[list[Any]], IngestReport]


class _Drain:
    def __init__(
        self,
        sqs: Any,
        queue: Queue,
        ingest_call: IngestCall,
        options: DrainOptions,
        on_batch: Callable[[QueueReport], None] | None,
    ) -> None:
        self.sqs = sqs
        self.queue = queue
        self.ingest_call = ingest_call
        self.options = options
        self.on_batch = on_batch
        self.report = QueueReport(queue.url, queue.dead_letter_arn, queue.max_receive_count)
        self.poisoned: set[str] = set()  # message ids reported as poison in this drain

    def receive_round(self) -> list[Received]:
        """Up to batch_messages messages: a long poll for the first ones, then whatever is ready at once."""
        options, report = self.options, self.report
        limit = options.batch_messages
        if options.max_messages is not None:
            limit = min(limit, options.max_messages - report.messages_received)
        messages: list[Received] = []
        wait = options.wait_seconds or int(options.follow)  # following an empty queue never spins
        while len(messages) < limit:
            got = sqs_queue.receive(self.sqs, self.queue, limit - len(messages), wait, options.visibility_seconds)
            if not got:
                break
            messages.extend(got)
            wait = 0  # the batch fills from what is ready; it never waits for more
        report.messages_received += len(messages)
        return messages

    def ingest_parsed(self, batch: _Batch) -> list[Received]:
        """Ingest the objects the parsed messages name; the messages done (their objects committed)."""
        whole = notifications.plan(notification for _, notification in batch.parsed)
        try:
            self._ingest(whole, batch.parsed)
            return [message for message, _ in batch.parsed]
        except ClientError as exc:
            if len(batch.parsed) == 1:
                batch.failed.append((batch.parsed[0][0], _s3_failure(exc)))
                return []
            log.warning("a batch of %d messages failed (%s): retrying message by message", len(batch.parsed), exc)
        done: list[Received] = []
        for message, notification in batch.parsed:  # find the message(s) at fault; commit the others
            try:
                self._ingest(notifications.plan([notification]), [(message, notification)])
                done.append(message)
            except ClientError as exc:
                batch.failed.append((message, _s3_failure(exc)))
        return done

    def _ingest(self, plan: notifications.Plan, messages: list[tuple[Received, Notification]]) -> None:
        if plan.objects:
            self.report.add_ingest(self.ingest_call(plan.objects))
        self.report.add_plan(plan, messages)

    def settle(self, done: list[Received], failed: list[tuple[Received, str]]) -> None:
        """Delete what is committed; leave the failures on the queue for a retry (and report poison)."""
        report = self.report
        if done:
            refused = sqs_queue.delete(self.sqs, self.queue, done)
            report.delete_refused += refused
            report.messages_deleted += len(done) - refused
        for message, reason in failed:
            poison = report.record_failure(message, reason, self.options.max_receives)
            if poison:
                self.poisoned.add(message.message_id)
            log.log(
                logging.ERROR if poison else logging.WARNING,
                "message %s (received %d times) failed: %s; %s",
                message.message_id,
                message.receive_count,
                safe_text.visible(reason),
                self._fate(poison),
            )
        if failed:
            sqs_queue.set_visibility(self.sqs, self.queue, [m for m, _ in failed], self.options.retry_delay_seconds)

    def _fate(self, poison: bool) -> str:
        queue = self.queue
        if queue.dead_letter_arn is not None:
            return f"SQS moves it to {queue.dead_letter_arn} once received {queue.max_receive_count} times"
        if poison:
            return "left on the queue, which has no dead-letter queue: add a redrive policy, or remove it by hand"
        return f"retried in {self.options.retry_delay_seconds} s"

    def run(self) -> QueueReport:
        options, report = self.options, self.report
        while options.max_messages is None or report.messages_received < options.max_messages:
            messages = self.receive_round()
            if not messages:
                if options.follow:
                    continue
                break
            if all(message.message_id in self.poisoned for message in messages):
                # Only messages already reported in this drain: retrying them now changes nothing.
                sqs_queue.set_visibility(self.sqs, self.queue, messages, options.retry_delay_seconds)
                if options.follow:
                    continue
                break
            batch = _parse(messages)
            with sqs_queue.Heartbeat(self.sqs, self.queue, messages, options.visibility_seconds) as heartbeat:
                done = self.ingest_parsed(batch) if batch.parsed else []
            report.visibility_extensions += heartbeat.extensions
            self.settle(done, batch.failed)
            report.batches += 1
            if self.on_batch is not None:
                self.on_batch(report)
        return report


def drain(
    queue: Queue,
    lake_path: Path | str,
    *,
    sqs_client: Any,
    s3_client: Any,
    clock: Callable[[], dt.datetime],
    options: DrainOptions | None = None,
    event_sources: tuple[str, ...] | list[str] = DEFAULT_SOURCES,
    workers: int = 1,
    progress: ingest.Progress | None = None,
    on_batch: Callable[[QueueReport], None] | None = None,
) -> QueueReport:
    """Drain `queue` (from `sqs_queue.open_queue`) into the lake; the report of what was done.

    `clock` gives the time each batch records in the ledger (the entry point reads the clock, not this code);
    `progress` is passed to each batch's ingest run; `on_batch` is called with the report after each batch.
    Raises `sqs_queue.QueueError` (the queue cannot be used), `ingest_failures.RunFault` (the lake cannot be
    written) and botocore's errors that are not about one object (credentials, network).
    """
    options = options or DrainOptions()
    options.check()

    def ingest_call(objects: list[Any]) -> IngestReport:
        return ingest.ingest_objects(
            objects,
            lake_path,
            event_sources=event_sources,
            s3_client=s3_client,
            workers=workers,
            progress=progress,
            now=clock(),
        )

    report = _Drain(sqs_client, queue, ingest_call, options, on_batch).run()
    log.info(
        "%s: %d messages received, %d deleted, %d failed (%d poison); %d objects read, %d events kept",
        queue.url,
        report.messages_received,
        report.messages_deleted,
        report.messages_failed,
        report.messages_poison,
        report.ingest.objects_read,
        report.ingest.events_kept,
    )
    return report
