"""The alert outbox, kept in the lake at `<lake>/alerts/outbox.sqlite` (SQLite, WAL, one transaction per step).

Each alert is `pending` (to be published), `sent` (SNS MessageId recorded, on its own or in a storm-cap summary),
`suppressed` (the same detection + dedup key already paged within the re-alert interval), `failed` (SNS would
not take it: given up with the reason, until `keytrail alerts retry`) or `excepted` (a tuning exception covered
the finding: kept with the exception that matched, never paged, suppressing nothing). A history row is written for every
change, for `keytrail alerts show`.

Suppression compares event times (`first_seen`), not wall-clock times, so a backfill over a past range pages as
often as live detection would have. Only alerts that paged or are on their way (`sent`, `pending`) suppress: when
a pending alert ends `failed`, the alerts it suppressed are judged again, and page in its place.

The file itself (schema, upgrades, errors, repair) is `outbox_store`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import logging
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec

from pipeline.alerting.alert import SEVERITY_RANK, Alert

# OutboxError and outbox_path are this module's public names too: callers import them from here.
from pipeline.alerting.outbox_store import OutboxError as OutboxError
from pipeline.alerting.outbox_store import connect, outbox_path, translated
from pipeline.settings import Settings
from pipeline.times import epoch_seconds, iso, parse_timestamp

log = logging.getLogger(__name__)

STATES: tuple[str, ...] = ("pending", "sent", "suppressed", "failed", "excepted")
MAX_REFUSALS = 3  # SNS refused an alert's message this many times (one per run): it is given up (`failed`)
DEFAULT_REALERT_AFTER = dt.timedelta(hours=Settings.realert_hours)  # KEYTRAIL_REALERT_HOURS's default
DEFAULT_KEY = "*"  # in a per-detection mapping: the interval for detections not named
RealertAfter = dt.timedelta | Mapping[str, dt.timedelta]


@dataclass(frozen=True)
class OutboxEntry:
    """One alert and its delivery state."""

    alert: Alert
    state: str
    enqueued_at: dt.datetime
    sent_at: dt.datetime | None
    message_id: str | None
    delivery: str | None
    summary_id: str | None
    suppressed_by: str | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class Delivery:
    """How SNS took an alert: its own message, or inside the storm-cap summary `summary_id`."""

    message_id: str
    summary_id: str | None = None

    @property
    def delivery(self) -> str:
        return "summary" if self.summary_id else "message"


@dataclass(frozen=True)
class HistoryEvent:
    at: dt.datetime
    event: str
    detail: str | None


@dataclass(frozen=True)
class EnqueueReport:
    """What `enqueue` did with each alert id it was given."""

    queued: tuple[str, ...] = ()
    suppressed: tuple[str, ...] = ()
    known: tuple[str, ...] = ()  # already in the outbox: an overlapping re-run adds nothing
    excepted: tuple[str, ...] = ()  # covered by a tuning exception: recorded, not paged

    def __str__(self) -> str:
        text = f"{len(self.queued)} queued, {len(self.suppressed)} suppressed, {len(self.known)} already known"
        return text + (f", {len(self.excepted)} excepted" if self.excepted else "")


def realert_interval(realert_after: RealertAfter, detection_id: str) -> dt.timedelta:
    """The re-alert interval for one detection: a single interval, or a per-detection mapping (`*` = others)."""
    if isinstance(realert_after, dt.timedelta):
        return realert_after
    return realert_after.get(detection_id, realert_after.get(DEFAULT_KEY, DEFAULT_REALERT_AFTER))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _translating(method: Callable[Concatenate[Outbox, _P], _R]) -> Callable[Concatenate[Outbox, _P], _R]:
    """Database and file errors inside an Outbox method become an OutboxError naming the file and what to do."""

    @functools.wraps(method)
    def wrapper(self: Outbox, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with translated(self.path):
            return method(self, *args, **kwargs)

    return wrapper


class Outbox:
    """The outbox of one lake. Open with `Outbox.open(lake)`; use as a context manager.

    Every method turns database and file errors (damaged file, read-only lake, full disk) into an OutboxError.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, lake: Path, *, create: bool = True) -> Outbox:
        return cls(connect(lake, create=create), outbox_path(lake))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Hold the lake's publisher lock, so two publishers never send the same pending alerts.

        An OS file lock: it is released when the process dies, so a crash never blocks the next run.
        """
        with translated(self.path):
            handle = open(self.path.with_name("publish.lock"), "w")  # noqa: SIM115 (closed below)
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutboxError(
                    f"another publisher is sending alerts from {self.path.parent.parent}: wait for it to finish, "
                    "then run `keytrail alerts publish` again (pending alerts stay pending meanwhile)"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- writes ----------------------------------------------------------------------------------------

    @_translating
    def enqueue(
        self, alerts: Sequence[Alert], *, now: dt.datetime, realert_after: RealertAfter = DEFAULT_REALERT_AFTER
    ) -> EnqueueReport:
        """Add new alerts as pending, or suppressed when their dedup key paged within the re-alert interval
        at the same or a higher severity, or excepted when they carry a tuning exception. Alert ids already in the
        outbox are left as they are."""
        queued: list[str] = []
        suppressed: list[str] = []
        known: list[str] = []
        excepted: list[str] = []
        at = iso(now)
        # Earliest first, so within one batch the first of a series pages and the rest are measured from it.
        ordered = sorted(alerts, key=lambda a: (epoch_seconds(a.first_seen), -SEVERITY_RANK[a.severity], a.alert_id))
        with self._transaction() as db:
            for alert in ordered:
                if db.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert.alert_id,)).fetchone():
                    known.append(alert.alert_id)
                    continue
                dedup_key = alert.effective_dedup_key()
                interval = realert_interval(realert_after, alert.detection_id).total_seconds()
                first_seen_s, rank = epoch_seconds(alert.first_seen), SEVERITY_RANK[alert.severity]
                exception_id = str(alert.exception.get("id")) if alert.exception else None
                paged = None if exception_id else _paged_within(db, dedup_key, first_seen_s, rank, interval)
                state = "excepted" if exception_id else "suppressed" if paged else "pending"
                db.execute(
                    "INSERT INTO alerts (alert_id, detection_id, dedup_key, severity, severity_rank, first_seen_s,"
                    " state, alert_json, enqueued_at, suppressed_by, realert_s, exception_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert.alert_id,
                        alert.detection_id,
                        dedup_key,
                        alert.severity,
                        rank,
                        first_seen_s,
                        state,
                        alert.to_json(),
                        at,
                        paged,
                        interval,
                        exception_id,
                    ),
                )
                if exception_id:
                    _note(db, [alert.alert_id], at, "excepted", _exception_detail(alert.exception or {}))
                    excepted.append(alert.alert_id)
                    continue
                detail = f"same dedup key as {paged}, which paged within the re-alert interval" if paged else None
                _note(db, [alert.alert_id], at, state if paged else "queued", detail)
                (suppressed if paged else queued).append(alert.alert_id)
        report = EnqueueReport(tuple(queued), tuple(suppressed), tuple(known), tuple(excepted))
        log.info("outbox %s: %s", self.path, report)
        return report

    @_translating
    def say_once(self, notices: Mapping[str, str], *, now: dt.datetime) -> list[str]:
        """Record notices (key -> message) not recorded before; returns the messages that are new, in order.
        How "an exception expired" is said by exactly one run, whichever runs first."""
        new: list[str] = []
        with self._transaction() as db:
            for key, message in notices.items():
                inserted = db.execute(
                    "INSERT OR IGNORE INTO notices (key, at, message) VALUES (?, ?, ?)", (key, iso(now), message)
                )
                if inserted.rowcount:
                    new.append(message)
        return new

    @_translating
    def mark_sent(self, deliveries: Mapping[str, Delivery], *, now: dt.datetime) -> None:
        """Record alerts SNS accepted (alert id -> how it went out), all in one transaction."""
        if not deliveries:
            return
        at = iso(now)
        with self._transaction() as db:
            for alert_id, sent in deliveries.items():
                db.execute(
                    "UPDATE alerts SET state = 'sent', sent_at = ?, message_id = ?, delivery = ?, summary_id = ?,"
                    " attempts = attempts + 1, last_error = NULL WHERE alert_id = ? AND state = 'pending'",
                    (at, sent.message_id, sent.delivery, sent.summary_id, alert_id),
                )
                if sent.summary_id:
                    _note(db, [alert_id], at, "summarized", f"MessageId {sent.message_id} (summary {sent.summary_id})")
                else:
                    _note(db, [alert_id], at, "sent", f"MessageId {sent.message_id}")

    @_translating
    def record_failures(self, errors: Mapping[str, str], *, now: dt.datetime) -> None:
        """Alerts SNS did not take for a reason of its own or the topic's (alert id -> error): they stay pending,
        with the error and attempt counted, however often it happens."""
        if not errors:
            return
        at = iso(now)
        with self._transaction() as db:
            db.executemany(
                "UPDATE alerts SET attempts = attempts + 1, last_error = ? WHERE alert_id = ? AND state = 'pending'",
                [(error, alert_id) for alert_id, error in errors.items()],
            )
            for alert_id, error in errors.items():
                _note(db, [alert_id], at, "failed", error)

    @_translating
    def record_refusals(self, errors: Mapping[str, str], *, now: dt.datetime, final: Collection[str] = ()) -> GiveUps:
        """Alerts whose message SNS refused as a bad request (alert id -> error). Each refusal counts an attempt;
        an alert is given up (`failed`, see `give_up`) at its MAX_REFUSALS-th refusal since it was queued or
        retried, or at once when its id is in `final` (a refusal no retry can change, e.g. "Message too long")."""
        if not errors:
            return GiveUps()
        at = iso(now)
        reasons: dict[str, str] = {}
        with self._transaction() as db:
            for alert_id, error in errors.items():
                updated = db.execute(
                    "UPDATE alerts SET attempts = attempts + 1, last_error = ?"
                    " WHERE alert_id = ? AND state = 'pending'",
                    (error, alert_id),
                )
                if not updated.rowcount:
                    continue
                _note(db, [alert_id], at, "refused", error)
                refusals = _refusals_since_queued(db, alert_id)
                if alert_id in final:
                    reasons[alert_id] = f"SNS refused it ({error}); the same message would be refused again"
                elif refusals >= MAX_REFUSALS:
                    reasons[alert_id] = f"SNS refused it {refusals} times, last: {error}"
            return _give_up(db, reasons, at)

    @_translating
    def give_up(self, reasons: Mapping[str, str], *, now: dt.datetime) -> GiveUps:
        """Move pending alerts SNS cannot take (alert id -> why) to `failed`, in one transaction. A failed alert
        is never sent, takes no storm-cap slot and suppresses nothing: the alerts it had suppressed are judged
        again (and page in its place when nothing else paged for them) - see `GiveUps.released`."""
        with self._transaction() as db:
            return _give_up(db, reasons, iso(now))

    @_translating
    def retry(self, id_or_prefix: str, *, now: dt.datetime) -> OutboxEntry:
        """Put a failed alert back in the queue (pending, with MAX_REFUSALS new chances), e.g. after fixing why
        SNS refused it. Raises OutboxError for an alert that is not failed."""
        entry = self.find(id_or_prefix)
        if entry.state != "failed":
            raise OutboxError(
                f"alert {entry.alert.alert_id[:12]} is {entry.state}, not failed: only failed alerts can be retried"
            )
        at = iso(now)
        alert_id = entry.alert.alert_id
        with self._transaction() as db:
            db.execute("UPDATE alerts SET state = 'pending' WHERE alert_id = ? AND state = 'failed'", (alert_id,))
            _note(db, [alert_id], at, "retry", "queued again by `keytrail alerts retry`")
        return self.find(alert_id)

    # -- reads -----------------------------------------------------------------------------------------

    @_translating
    def entries(self, state: str | None = None) -> list[OutboxEntry]:
        """Alerts (optionally in one state), most severe first, then by time."""
        if state is not None and state not in STATES:
            raise OutboxError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self._db.execute(
            f"SELECT * FROM alerts {where} ORDER BY severity_rank DESC, first_seen_s, alert_id", params
        ).fetchall()
        return [_entry(row) for row in rows]

    def pending(self) -> list[OutboxEntry]:
        return self.entries("pending")

    @_translating
    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) AS n FROM alerts GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {row["state"]: row["n"] for row in rows}

    @_translating
    def find(self, id_or_prefix: str) -> OutboxEntry:
        """The alert whose id is, or starts with, `id_or_prefix` (the short ids `alerts list` prints)."""
        prefix = id_or_prefix.strip().lower()
        rows = self._db.execute(
            "SELECT * FROM alerts WHERE alert_id >= ? AND alert_id < ? ORDER BY alert_id LIMIT 2",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        if not prefix or not rows:
            raise OutboxError(f"no alert with id {id_or_prefix!r}: `keytrail alerts list` shows the ids")
        if len(rows) > 1:
            raise OutboxError(f"{id_or_prefix!r} matches several alerts: give more characters of the id")
        return _entry(rows[0])

    @_translating
    def history(self, alert_id: str) -> list[HistoryEvent]:
        rows = self._db.execute(
            "SELECT at, event, detail FROM history WHERE alert_id = ? ORDER BY seq", (alert_id,)
        ).fetchall()
        return [HistoryEvent(parse_timestamp(row["at"]), row["event"], row["detail"]) for row in rows]


@dataclass(frozen=True)
class GiveUps:
    """Alerts moved to `failed` (alert id -> why), and the alerts they had suppressed that are pending again."""

    given_up: dict[str, str] = dataclasses.field(default_factory=dict)
    released: tuple[str, ...] = ()

    def __or__(self, other: GiveUps) -> GiveUps:
        return GiveUps(self.given_up | other.given_up, self.released + other.released)


# -- inside a transaction ------------------------------------------------------------------------------------


def _note(db: sqlite3.Connection, alert_ids: Sequence[str], at: str, event: str, detail: str | None) -> None:
    db.executemany(
        "INSERT INTO history (alert_id, at, event, detail) VALUES (?, ?, ?, ?)",
        [(alert_id, at, event, detail) for alert_id in alert_ids],
    )


def _exception_detail(exception: Mapping[str, Any]) -> str:
    expires = exception.get("expires")
    return (
        f"tuning exception {exception.get('id')} ({exception.get('source')}): {exception.get('reason')}; "
        f"owner {exception.get('owner')}" + (f", expires {expires}" if expires else "")
    )


def _paged_within(
    db: sqlite3.Connection, dedup_key: str, first_seen_s: float, severity_rank: int, interval_s: float
) -> str | None:
    """The alert that paged (or is queued to) for this key near `first_seen_s` at >= this severity, if any.

    Suppressed and failed alerts never count: neither reached anyone."""
    if interval_s <= 0:
        return None
    row = db.execute(
        "SELECT alert_id FROM alerts WHERE dedup_key = ? AND state IN ('pending', 'sent')"
        " AND abs(first_seen_s - ?) < ? AND severity_rank >= ? ORDER BY first_seen_s LIMIT 1",
        (dedup_key, first_seen_s, interval_s, severity_rank),
    ).fetchone()
    return row["alert_id"] if row else None


def _refusals_since_queued(db: sqlite3.Connection, alert_id: str) -> int:
    """SNS refusals of this alert since it was queued, or since its last `keytrail alerts retry`."""
    row = db.execute(
        "SELECT count(*) FROM history WHERE alert_id = ? AND event = 'refused' AND seq >"
        " coalesce((SELECT max(seq) FROM history WHERE alert_id = ? AND event = 'retry'), 0)",
        (alert_id, alert_id),
    ).fetchone()
    return int(row[0])


def _give_up(db: sqlite3.Connection, reasons: Mapping[str, str], at: str) -> GiveUps:
    given_up: dict[str, str] = {}
    released: list[str] = []
    for alert_id, reason in reasons.items():
        updated = db.execute(
            "UPDATE alerts SET state = 'failed', last_error = ? WHERE alert_id = ? AND state = 'pending'",
            (reason, alert_id),
        )
        if updated.rowcount:
            _note(db, [alert_id], at, "gave up", reason)
            given_up[alert_id] = reason
            released.extend(_release(db, alert_id, at))
    if given_up:
        log.warning("outbox: %d alert(s) given up as undeliverable: %s", len(given_up), sorted(given_up))
    return GiveUps(given_up, tuple(released))


def _release(db: sqlite3.Connection, failed_id: str, at: str) -> list[str]:
    """Judge again, oldest first, the alerts `failed_id` suppressed: each is suppressed by another alert that
    paged (or is queued to) within its interval, else it is pending again (it pages in the failed one's place).
    Returns the ids made pending."""
    released: list[str] = []
    rows = db.execute(
        "SELECT alert_id, dedup_key, first_seen_s, severity_rank, realert_s FROM alerts"
        " WHERE state = 'suppressed' AND suppressed_by = ? ORDER BY first_seen_s, alert_id",
        (failed_id,),
    ).fetchall()
    for row in rows:
        # realert_s is NULL for alerts queued before the outbox kept it: release those (page rather than miss).
        paged = None
        if row["realert_s"] is not None:
            paged = _paged_within(db, row["dedup_key"], row["first_seen_s"], row["severity_rank"], row["realert_s"])
        db.execute("UPDATE alerts SET state = ?, suppressed_by = ? WHERE alert_id = ?",
                   ("suppressed" if paged else "pending", paged, row["alert_id"]))  # fmt: skip
        if paged:
            _note(db, [row["alert_id"]], at, "suppressed", f"same dedup key as {paged} ({failed_id} was not delivered)")
        else:
            _note(db, [row["alert_id"]], at, "released", f"{failed_id}, which suppressed it, was not delivered")
            released.append(row["alert_id"])
    return released


def _entry(row: sqlite3.Row) -> OutboxEntry:
    data: dict[str, Any] = msgspec.json.decode(row["alert_json"])
    return OutboxEntry(
        alert=dataclasses.replace(Alert.from_dict(data), dedup_key=row["dedup_key"]),
        state=row["state"],
        enqueued_at=parse_timestamp(row["enqueued_at"]),
        sent_at=parse_timestamp(row["sent_at"]) if row["sent_at"] else None,
        message_id=row["message_id"],
        delivery=row["delivery"],
        summary_id=row["summary_id"],
        suppressed_by=row["suppressed_by"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def enqueue(
    lake: Path,
    alerts: Sequence[Alert],
    *,
    now: dt.datetime,
    realert_after: RealertAfter = DEFAULT_REALERT_AFTER,
) -> EnqueueReport:
    """Put detection results into the lake's outbox (idempotent on alert_id; see `Outbox.enqueue`)."""
    with Outbox.open(lake) as box:
        return box.enqueue(alerts, now=now, realert_after=realert_after)
