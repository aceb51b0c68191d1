"""Publish the outbox's pending alerts to SNS: none lost, none repeated  [I/O edge; the client is passed in].

Each PublishBatch call carries <= 10 entries and <= 256 KB; the MessageIds SNS returns are recorded in one
outbox transaction right after the call, so a crash in between repeats at most that one batch on the next run
(every message carries `alert_id` for subscriber-side dedup; FIFO topics also deduplicate on it).

What SNS does not take is sorted by whose fault it is. SNS's own trouble (throttling, 5xx) is retried with
backoff and stays pending; so does a fault of the topic or the credentials (missing topic, denied, KMS), which
stops the run. A refusal of one message (a sender fault such as InvalidParameter) counts against that alert
only: it is given up (`failed`) after `outbox.MAX_REFUSALS` refusals, at once when no retry can help (too long),
and a message over SNS's limits even after trimming is given up without being sent. A given-up alert never
blocks the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.alerting import sns_errors
from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import (
    MAX_MESSAGE_BYTES,
    attributes_size,
    message_attributes,
    render_body,
    storm_summary,
    subject,
)
from pipeline.alerting.outbox import Delivery, GiveUps, Outbox, OutboxError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 262_144
DEFAULT_MAX_ATTEMPTS = 6
_BACKOFF_BASE_S = 0.25
_BACKOFF_CAP_S = 8.0


class PublishError(Exception):
    """Publishing stopped; the alerts not yet sent stay pending. The message says what to do next."""


@dataclass(frozen=True)
class PublishReport:
    """What one `publish_pending` run did."""

    sent: tuple[str, ...] = ()  # alert ids published as their own message
    summarized: tuple[str, ...] = ()  # alert ids covered by the storm-cap summary
    summary_message_id: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # alert id -> error: this attempt failed, still pending
    calls: int = 0  # PublishBatch calls, retries included
    retries: int = 0
    undeliverable: dict[str, str] = field(default_factory=dict)  # alert id -> why: given up, now `failed`
    released: tuple[str, ...] = ()  # alerts those had suppressed: pending again, for the next run

    @property
    def messages(self) -> int:
        return len(self.sent) + (1 if self.summary_message_id else 0)

    def __str__(self) -> str:
        text = f"{self.messages} messages: {len(self.sent)} alerts sent"
        if self.summary_message_id:
            text += f", {len(self.summarized)} more in one storm-cap summary"
        if self.failed:
            text += f"; {len(self.failed)} failed and stay pending"
        if self.undeliverable:
            text += f"; {len(self.undeliverable)} undeliverable (now failed)"
        if self.released:
            text += f"; {len(self.released)} they had suppressed are pending again"
        return f"{text} ({self.calls} PublishBatch calls, {self.retries} retries)"


@dataclass(frozen=True)
class _Entry:
    """One PublishBatch entry and the outbox alerts it delivers (one alert, or all the summary stands for)."""

    request: dict[str, Any]
    alert_ids: tuple[str, ...]
    size: int
    summary_id: str | None = None

    @property
    def entry_id(self) -> str:
        return str(self.request["Id"])


def _entry(alert: Alert, fmt: str, *, fifo: bool, created: dt.datetime) -> _Entry:
    attributes = message_attributes(alert)
    title = subject(alert)
    # The whole entry (Subject counted too, to be safe) must stay within SNS's 256 KB per message.
    overhead = attributes_size(attributes) + len(title.encode())
    body = render_body(alert, fmt, created=created, budget=MAX_MESSAGE_BYTES - overhead)
    request: dict[str, Any] = {"Id": alert.alert_id, "Message": body, "Subject": title, "MessageAttributes": attributes}
    if fifo:
        request["MessageDeduplicationId"] = alert.alert_id
        request["MessageGroupId"] = alert.detection_id
    return _Entry(request, (alert.alert_id,), len(body.encode()) + overhead)


def _too_big(entry: _Entry) -> str | None:
    """Why SNS could never take `entry` (over its size limit even after trimming), or None."""
    if entry.size <= MAX_MESSAGE_BYTES:
        return None
    return f"too big for SNS even after trimming ({entry.size:,} bytes, the limit is {MAX_MESSAGE_BYTES:,})"


def plan_batches(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    """Greedy batches of <= 10 entries and <= 256 KB in total, in the given order."""
    batches: list[list[_Entry]] = []
    current: list[_Entry] = []
    current_bytes = 0
    for entry in entries:
        if current and (len(current) == MAX_BATCH_ENTRIES or current_bytes + entry.size > MAX_BATCH_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(entry)
        current_bytes += entry.size
    if current:
        batches.append(current)
    return batches


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential, capped."""
    return min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt - 1))


class _Publisher:
    """Sends batches for one run, records results in the outbox, and counts what happened."""

    def __init__(
        self,
        box: Outbox,
        client: Any,
        topic_arn: str,
        *,
        now: dt.datetime,
        sleep: Callable[[float], None],
        max_attempts: int,
        on_accepted: Callable[[Sequence[str]], None] | None,
    ) -> None:
        self.box, self.client, self.topic_arn, self.now = box, client, topic_arn, now
        self.sleep, self.max_attempts, self.on_accepted = sleep, max_attempts, on_accepted
        self.sent: list[str] = []
        self.summarized: list[str] = []
        self.summary_message_id: str | None = None
        self.failed: dict[str, str] = {}
        self.given_up = GiveUps()
        self.calls = 0
        self.retries = 0

    def send(self, batch: Sequence[_Entry]) -> None:
        """Publish one batch; retry failed entries (and throttling/5xx) with backoff; raise on fatal errors."""
        remaining = list(batch)
        errors: dict[str, str] = {}  # entry id -> its latest retryable error
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self.retries += 1
                self.sleep(backoff(attempt - 1))
            self.calls += 1
            try:
                response = self.client.publish_batch(
                    TopicArn=self.topic_arn, PublishBatchRequestEntries=[entry.request for entry in remaining]
                )
            except (ClientError, BotoCoreError) as err:
                code, message = sns_errors.error_text(err)
                if sns_errors.retryable(err) and attempt < self.max_attempts:
                    log.warning("SNS PublishBatch failed (%s: %s); retrying", code, message)
                    continue
                if sns_errors.refuses_a_message(err):
                    self._isolate(remaining, f"{code}: {message}")
                    return
                self._fail(remaining, {entry.entry_id: f"{code}: {message}" for entry in remaining})
                raise self._publish_error(err, attempt) from err
            remaining, errors = self._record(remaining, response)
            if not remaining:
                return
            log.warning("SNS failed %d of the batch's entries; retrying only those", len(remaining))
        self._fail(remaining, errors)

    def _record(self, entries: Sequence[_Entry], response: dict[str, Any]) -> tuple[list[_Entry], dict[str, str]]:
        """Record what SNS accepted (one transaction); return the failed entries worth a retry, with errors."""
        by_id = {entry.entry_id: entry for entry in entries}
        accepted = {item["Id"]: item["MessageId"] for item in response.get("Successful", [])}
        if accepted and self.on_accepted is not None:
            self.on_accepted(tuple(accepted))  # fault-injection point: SNS has them, the outbox does not yet
        deliveries: dict[str, Delivery] = {}
        for entry_id, message_id in accepted.items():
            entry = by_id[entry_id]
            deliveries |= dict.fromkeys(entry.alert_ids, Delivery(message_id, entry.summary_id))
            if entry.summary_id:
                self.summarized.extend(entry.alert_ids)
                self.summary_message_id = message_id
            else:
                self.sent.append(entry_id)
        self.box.mark_sent(deliveries, now=self.now)
        retry: list[_Entry] = []
        errors: dict[str, str] = {}
        topic: list[_Entry] = []
        refused: list[_Entry] = []
        for item in response.get("Failed", []):
            entry = by_id[item["Id"]]
            code = str(item.get("Code", "Unknown"))
            errors[entry.entry_id] = f"{code}: {item.get('Message', '')}"
            # A sender fault means the request is wrong: retrying it now cannot help. The topic's faults leave the
            # alert pending; a refusal of the message itself counts against that alert (see `_refuse`).
            if not item.get("SenderFault"):
                retry.append(entry)
            else:
                (topic if sns_errors.topic_fault(code) else refused).append(entry)
        if topic:
            log.error("SNS rejected %d entries: %s", len(topic), sorted({errors[e.entry_id] for e in topic}))
            self._fail(topic, errors)
        for entry in refused:
            self._refuse(entry, errors[entry.entry_id])
        return retry, errors

    def _isolate(self, entries: Sequence[_Entry], error: str) -> None:
        """SNS refused the whole call for something in one of `entries`: send them one by one to find which."""
        if len(entries) > 1:
            log.warning("SNS refused a batch of %d (%s): sending its entries one by one", len(entries), error)
            for entry in entries:
                self.send([entry])
        else:
            self._refuse(entries[0], error)

    def _refuse(self, entry: _Entry, error: str) -> None:
        """SNS refused this entry's message: count it against its alerts (given up when refused too often)."""
        log.info("SNS refused the message for %s: %s", entry.entry_id, error)
        errors = dict.fromkeys(entry.alert_ids, error)
        final = entry.alert_ids if sns_errors.refused_for_good(error) else ()
        outcome = self.box.record_refusals(errors, now=self.now, final=final)
        self.given_up |= outcome
        self.failed |= {alert_id: error for alert_id in entry.alert_ids if alert_id not in outcome.given_up}

    def give_up(self, entry: _Entry, reason: str) -> None:
        """Never send `entry`: its alerts are given up at once with `reason`."""
        log.info("not sending %s: %s", entry.entry_id, reason)
        self.given_up |= self.box.give_up(dict.fromkeys(entry.alert_ids, reason), now=self.now)

    def _fail(self, entries: Sequence[_Entry], errors: Mapping[str, str]) -> None:
        failed = {
            alert_id: errors.get(entry.entry_id, "unknown error") for entry in entries for alert_id in entry.alert_ids
        }
        self.box.record_failures(failed, now=self.now)
        self.failed |= failed

    def _publish_error(self, err: Exception, attempts: int) -> PublishError:
        code, message = sns_errors.error_text(err)
        hint = sns_errors.hint(err, topic=self.topic_arn, attempts=attempts)
        pending = len(self.box.pending())
        return PublishError(f"could not publish ({code}: {message}). {hint}. {pending} alert(s) stay pending.")

    def report(self) -> PublishReport:
        return PublishReport(
            sent=tuple(self.sent),
            summarized=tuple(self.summarized),
            summary_message_id=self.summary_message_id,
            failed=dict(self.failed),
            calls=self.calls,
            retries=self.retries,
            undeliverable=dict(self.given_up.given_up),
            released=self.given_up.released,
        )


def publish_pending(
    lake: Path,
    sns_client: Any,
    topic_arn: str,
    *,
    now: dt.datetime,
    storm_cap: int = Settings.storm_cap,  # KEYTRAIL_STORM_CAP's default
    fmt: str = "json",
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    on_progress: Callable[[int, int], None] | None = None,
    on_accepted: Callable[[Sequence[str]], None] | None = None,
) -> PublishReport:
    """Send the lake's pending alerts to `topic_arn` and record each as sent with its MessageId.

    The `storm_cap` most severe alerts go one message each; any others go in one summary message. FIFO topics
    (`.fifo`) get MessageDeduplicationId = alert_id and MessageGroupId = detection_id. `on_progress(done, total)`
    follows the messages; `on_accepted(entry ids)` runs after SNS accepted a batch and before the outbox records
    it (a fault-injection point for tests). Raises PublishError (alerts stay pending) when SNS refuses the topic.
    An alert SNS cannot take is given up (`failed`, reported in `undeliverable`) and never takes a storm-cap slot.
    """
    if storm_cap < 1:
        raise ValueError("storm_cap must be at least 1")
    if not topic_arn:  # a caller's bug: `publish.queue_and_publish` decides what happens without a topic
        raise ValueError("topic_arn is required")
    fifo = topic_arn.endswith(".fifo")
    try:
        with Outbox.open(lake) as box, box.publishing():
            publisher = _Publisher(
                box, sns_client, topic_arn, now=now, sleep=sleep, max_attempts=max_attempts, on_accepted=on_accepted
            )
            held = box.pending()
            entries: list[_Entry] = []
            while held and len(entries) < storm_cap:  # the storm cap's slots go to alerts SNS can take
                item = held.pop(0)
                entry = _entry(item.alert, fmt, fifo=fifo, created=item.enqueued_at)
                if reason := _too_big(entry):
                    publisher.give_up(entry, reason)
                else:
                    entries.append(entry)
            if held:
                summary = storm_summary([item.alert for item in held], storm_cap=storm_cap)
                delivers = tuple(item.alert.alert_id for item in held)
                entry = _entry(summary, fmt, fifo=fifo, created=now)
                entry = dataclasses.replace(entry, alert_ids=delivers, summary_id=summary.alert_id)
                if reason := _too_big(entry):
                    publisher.give_up(entry, f"its storm-cap summary {summary.alert_id[:12]} was {reason}")
                else:
                    entries.append(entry)
                log.warning("storm cap %d reached: %d alerts go in one summary message", storm_cap, len(held))
            done = 0
            for batch in plan_batches(entries):
                publisher.send(batch)
                done += len(batch)
                if on_progress is not None:
                    on_progress(done, len(entries))
            report = publisher.report()
    except OutboxError as err:
        raise PublishError(str(err)) from err
    log.info("published to %s: %s", topic_arn, report)
    return report
