"""The alert outbox, kept in the lake at `<lake>/alerts/outbox.sqlite` (SQLite, WAL, one transaction per step).

Each alert is `pending` (to be published), `sent` (SNS MessageId recorded, on its own or in a storm-cap summary)
or `suppressed` (the same detection + dedup key already paged within the re-alert interval). A history row is
written for every change, for `keytrail alerts show`.

Suppression compares event times (`first_seen`), not wall-clock times, so a backfill over a past range pages as
often as live detection would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pipeline.alerting.alert import SEVERITY_RANK, Alert
from pipeline.settings import Settings
from pipeline.times import epoch_seconds, iso, parse_timestamp

log = logging.getLogger(__name__)

OUTBOX_FILE = Path("alerts") / "outbox.sqlite"
STATES: tuple[str, ...] = ("pending", "sent", "suppressed")
DEFAULT_REALERT_AFTER = dt.timedelta(hours=Settings.realert_hours)  # KEYTRAIL_REALERT_HOURS's default
DEFAULT_KEY = "*"  # in a per-detection mapping: the interval for detections not named
RealertAfter = dt.timedelta | Mapping[str, dt.timedelta]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id      TEXT PRIMARY KEY,
    detection_id  TEXT NOT NULL,
    dedup_key     TEXT NOT NULL,
    severity      TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    first_seen_s  REAL NOT NULL,            -- epoch seconds, for the re-alert window
    state         TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'suppressed')),
    alert_json    TEXT NOT NULL,
    enqueued_at   TEXT NOT NULL,
    sent_at       TEXT,
    message_id    TEXT,
    delivery      TEXT CHECK (delivery IN ('message', 'summary')),
    summary_id    TEXT,                     -- the storm-cap summary alert that carried it
    suppressed_by TEXT,                     -- the alert that paged for the same dedup key
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, severity_rank DESC, first_seen_s, alert_id);
CREATE INDEX IF NOT EXISTS alerts_by_dedup ON alerts (dedup_key, first_seen_s);
CREATE TABLE IF NOT EXISTS history (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    at       TEXT NOT NULL,
    event    TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX IF NOT EXISTS history_by_alert ON history (alert_id, seq);
"""


class OutboxError(Exception):
    """The outbox cannot do what was asked (missing, ambiguous id, busy); the message says what to do next."""


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

    def __str__(self) -> str:
        return f"{len(self.queued)} queued, {len(self.suppressed)} suppressed, {len(self.known)} already known"


def realert_interval(realert_after: RealertAfter, detection_id: str) -> dt.timedelta:
    """The re-alert interval for one detection: a single interval, or a per-detection mapping (`*` = others)."""
    if isinstance(realert_after, dt.timedelta):
        return realert_after
    return realert_after.get(detection_id, realert_after.get(DEFAULT_KEY, DEFAULT_REALERT_AFTER))


def outbox_path(lake: Path) -> Path:
    return Path(lake) / OUTBOX_FILE


class Outbox:
    """The outbox of one lake. Open with `Outbox.open(lake)`; use as a context manager."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, lake: Path, *, create: bool = True) -> Outbox:
        path = outbox_path(lake)
        if not path.exists():
            if not create:
                raise OutboxError(
                    f"no alert outbox in {lake} yet: run `keytrail detect --lake {lake} --publish` to create it"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write below opens its own explicit transaction.
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # a recorded MessageId must survive a crash
        if connection.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
            connection.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;")
        return cls(connection, path)

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
        with open(self.path.with_name("publish.lock"), "w") as handle:
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

    def enqueue(
        self, alerts: Sequence[Alert], *, now: dt.datetime, realert_after: RealertAfter = DEFAULT_REALERT_AFTER
    ) -> EnqueueReport:
        """Add new alerts as pending, or suppressed when their dedup key paged within the re-alert interval
        at the same or a higher severity. Alert ids already in the outbox are left as they are."""
        queued: list[str] = []
        suppressed: list[str] = []
        known: list[str] = []
        at = iso(now)
        # Earliest first, so within one batch the first of a series pages and the rest are measured from it.
        ordered = sorted(alerts, key=lambda a: (epoch_seconds(a.first_seen), -SEVERITY_RANK[a.severity], a.alert_id))
        with self._transaction() as db:
            for alert in ordered:
                if db.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert.alert_id,)).fetchone():
                    known.append(alert.alert_id)
                    continue
                dedup_key = alert.effective_dedup_key()
                paged = self._paged_within(db, alert, dedup_key, realert_interval(realert_after, alert.detection_id))
                state = "suppressed" if paged else "pending"
                db.execute(
                    "INSERT INTO alerts (alert_id, detection_id, dedup_key, severity, severity_rank, first_seen_s,"
                    " state, alert_json, enqueued_at, suppressed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert.alert_id,
                        alert.detection_id,
                        dedup_key,
                        alert.severity,
                        SEVERITY_RANK[alert.severity],
                        epoch_seconds(alert.first_seen),
                        state,
                        alert.to_json(),
                        at,
                        paged,
                    ),
                )
                detail = f"same dedup key as {paged}, which paged within the re-alert interval" if paged else None
                self._note(db, [alert.alert_id], at, state if paged else "queued", detail)
                (suppressed if paged else queued).append(alert.alert_id)
        report = EnqueueReport(tuple(queued), tuple(suppressed), tuple(known))
        log.info("outbox %s: %s", self.path, report)
        return report

    @staticmethod
    def _paged_within(db: sqlite3.Connection, alert: Alert, dedup_key: str, interval: dt.timedelta) -> str | None:
        """The alert that already paged for this key near `alert`'s time at >= its severity, if any."""
        if interval <= dt.timedelta(0):
            return None
        row = db.execute(
            "SELECT alert_id FROM alerts WHERE dedup_key = ? AND state != 'suppressed'"
            " AND abs(first_seen_s - ?) < ? AND severity_rank >= ? ORDER BY first_seen_s LIMIT 1",
            (dedup_key, epoch_seconds(alert.first_seen), interval.total_seconds(), SEVERITY_RANK[alert.severity]),
        ).fetchone()
        return row["alert_id"] if row else None

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
                    self._note(
                        db, [alert_id], at, "summarized", f"MessageId {sent.message_id} (summary {sent.summary_id})"
                    )
                else:
                    self._note(db, [alert_id], at, "sent", f"MessageId {sent.message_id}")

    def record_failures(self, errors: Mapping[str, str], *, now: dt.datetime) -> None:
        """Alerts SNS did not take (alert id -> error): they stay pending, with the error and attempt counted."""
        if not errors:
            return
        at = iso(now)
        with self._transaction() as db:
            db.executemany(
                "UPDATE alerts SET attempts = attempts + 1, last_error = ? WHERE alert_id = ? AND state = 'pending'",
                [(error, alert_id) for alert_id, error in errors.items()],
            )
            for alert_id, error in errors.items():
                self._note(db, [alert_id], at, "failed", error)

    @staticmethod
    def _note(db: sqlite3.Connection, alert_ids: Sequence[str], at: str, event: str, detail: str | None) -> None:
        db.executemany(
            "INSERT INTO history (alert_id, at, event, detail) VALUES (?, ?, ?, ?)",
            [(alert_id, at, event, detail) for alert_id in alert_ids],
        )

    # -- reads -----------------------------------------------------------------------------------------

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

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) AS n FROM alerts GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | {row["state"]: row["n"] for row in rows}

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

    def history(self, alert_id: str) -> list[HistoryEvent]:
        rows = self._db.execute(
            "SELECT at, event, detail FROM history WHERE alert_id = ? ORDER BY seq", (alert_id,)
        ).fetchall()
        return [HistoryEvent(parse_timestamp(row["at"]), row["event"], row["detail"]) for row in rows]


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
