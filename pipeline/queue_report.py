"""What a queue drain is asked to do (`DrainOptions`) and what it did (`QueueReport`).

The report's counts are exact; its lists (failures, poison, the ingest runs' quarantine and batch ids) keep
only the last few entries, so a drain that follows a queue for weeks does not grow in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import notifications, sqs_queue
from pipeline.ingest import IngestReport
from pipeline.notifications import Notification
from pipeline.sqs_queue import Received

MAX_BATCH_MESSAGES = 1_000  # the largest batch allowed: ~256 KB a message at most, so <= 256 MB of bodies
_KEEP = 50  # how many failures / poison messages a report keeps for display (counts stay exact)


@dataclass(frozen=True)
class DrainOptions:
    """How to drain. The defaults suit a scheduled run that drains the backlog and stops."""

    batch_messages: int = 100  # messages per lake commit
    wait_seconds: int = sqs_queue.MAX_WAIT_SECONDS  # long poll for the first message of a round
    visibility_seconds: int = 120  # kept invisible this long, re-extended while the batch is worked on
    retry_delay_seconds: int = 60  # a failed message becomes visible again after this
    max_receives: int = 5  # a message failing at this receive count or later is reported as poison
    max_messages: int | None = None  # stop after receiving this many (None: until the queue is empty)
    follow: bool = False  # keep polling when the queue is empty (until interrupted)

    def check(self) -> None:
        """Raise ValueError naming the option that is out of range."""
        if not 1 <= self.batch_messages <= MAX_BATCH_MESSAGES:
            raise ValueError(f"--batch-messages must be 1..{MAX_BATCH_MESSAGES}, not {self.batch_messages}")
        if not 0 <= self.wait_seconds <= sqs_queue.MAX_WAIT_SECONDS:
            raise ValueError(f"--wait-seconds must be 0..{sqs_queue.MAX_WAIT_SECONDS}, not {self.wait_seconds}")
        delays = (("--visibility-timeout", self.visibility_seconds), ("--retry-delay", self.retry_delay_seconds))
        for name, value in delays:
            if not 0 <= value <= sqs_queue.MAX_VISIBILITY_SECONDS:
                raise ValueError(f"{name} must be 0..{sqs_queue.MAX_VISIBILITY_SECONDS} seconds, not {value}")
        if self.max_receives < 1 or (self.max_messages is not None and self.max_messages < 1):
            raise ValueError("--max-receives and --max-messages must be at least 1")


@dataclass(frozen=True)
class MessageFailure:
    message_id: str
    receive_count: int
    reason: str


@dataclass
class QueueReport:
    """What a drain did. `ingest` sums the ingest runs of the committed batches."""

    queue: str
    dead_letter_arn: str | None = None
    max_receive_count: int | None = None
    batches: int = 0
    messages_received: int = 0
    messages_deleted: int = 0
    messages_failed: int = 0  # failed receives, left on the queue (a message failing twice counts twice)
    messages_poison: int = 0  # failed receives at max_receives or later (reported; left on the queue)
    delete_refused: int = 0  # deletes SQS refused (the message comes back; the ledger skips its objects)
    control_messages: int = 0  # s3:TestEvent, SNS subscription confirmations
    shapes: dict[str, int] = field(default_factory=dict)  # messages per shape
    objects_notified: int = 0  # object-created records in deleted messages
    objects_repeated: int = 0  # named more than once in one batch
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> objects (or records) acknowledged unread
    visibility_extensions: int = 0
    failures: list[MessageFailure] = field(default_factory=list)  # the last few messages, each its latest failure
    poison: list[MessageFailure] = field(default_factory=list)  # the same, for poison
    ingest: IngestReport = field(default_factory=IngestReport)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def add_plan(self, plan: notifications.Plan, messages: list[tuple[Received, Notification]]) -> None:
        for _, notification in messages:
            self.shapes[notification.shape] = self.shapes.get(notification.shape, 0) + 1
            if notification.shape in (notifications.SHAPE_TEST, notifications.SHAPE_SNS_CONTROL):
                self.control_messages += 1
            self.objects_notified += len(notification.created)
        for reason, count in plan.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.objects_repeated += plan.repeated

    def add_ingest(self, report: IngestReport) -> None:
        merged = self.ingest.merge(report)
        merged.quarantine = merged.quarantine[-_KEEP:]  # a long follow run must not grow without bound
        merged.batches = merged.batches[-_KEEP:]
        self.ingest = merged

    def record_failure(self, message: Received, reason: str, max_receives: int) -> bool:
        """Count a failure; True when it is poison (received max_receives times or more)."""
        failure = MessageFailure(message.message_id, message.receive_count, reason)
        self.messages_failed += 1
        self.failures = _latest(self.failures, failure)
        if message.receive_count < max_receives:
            return False
        self.messages_poison += 1
        self.poison = _latest(self.poison, failure)
        return True


def _latest(failures: list[MessageFailure], failure: MessageFailure) -> list[MessageFailure]:
    """The last few failures, one per message (its latest)."""
    others = [kept for kept in failures if kept.message_id != failure.message_id]
    return [*others[-(_KEEP - 1) :], failure]
