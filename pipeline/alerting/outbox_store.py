"""The outbox's SQLite file, `<lake>/alerts/outbox.sqlite`: opening it, its schema and the upgrade from the
previous one, the one translation of database and file errors into advice, and repairing a damaged file.

`pipeline.alerting.outbox` keeps the alerts' states in it; this module knows only the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.times import stamp

log = logging.getLogger(__name__)

OUTBOX_FILE = Path("alerts") / "outbox.sqlite"
_SIDE_FILES = ("-wal", "-shm")  # SQLite's WAL and shared-memory files beside the database

# Version 2 added the `failed` state (the state CHECK) and `realert_s`; version 3 the `excepted` state (a tuning
# exception covered the finding: recorded, never paged), `exception_id` and the `notices` said once. Older
# outboxes are upgraded in place.
_SCHEMA_VERSION = 3
_SET_VERSION = "PRAGMA user_version = 3"
_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS alerts (
    alert_id      TEXT PRIMARY KEY,
    detection_id  TEXT NOT NULL,
    dedup_key     TEXT NOT NULL,
    severity      TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    first_seen_s  REAL NOT NULL,            -- epoch seconds, for the re-alert window
    state         TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'suppressed', 'failed', 'excepted')),
    alert_json    TEXT NOT NULL,
    enqueued_at   TEXT NOT NULL,
    sent_at       TEXT,
    message_id    TEXT,
    delivery      TEXT CHECK (delivery IN ('message', 'summary')),
    summary_id    TEXT,                     -- the storm-cap summary alert that carried it
    suppressed_by TEXT,                     -- the alert that paged for the same dedup key
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    realert_s     REAL,                     -- the re-alert interval it was judged with (NULL: before version 2)
    exception_id  TEXT                      -- excepted: the tuning exception that covered it
)""",
    "CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, severity_rank DESC, first_seen_s, alert_id)",
    "CREATE INDEX IF NOT EXISTS alerts_by_dedup ON alerts (dedup_key, first_seen_s)",
    "CREATE INDEX IF NOT EXISTS alerts_by_suppressor ON alerts (suppressed_by)",
    """CREATE TABLE IF NOT EXISTS history (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    at       TEXT NOT NULL,
    event    TEXT NOT NULL,
    detail   TEXT
)""",
    "CREATE INDEX IF NOT EXISTS history_by_alert ON history (alert_id, seq)",
    """CREATE TABLE IF NOT EXISTS notices (
    key     TEXT PRIMARY KEY,                -- what was said (e.g. an exception that expired): said once
    at      TEXT NOT NULL,
    message TEXT NOT NULL
)""",
)
# SQLite cannot change a CHECK constraint: an older table is set aside, recreated by _SCHEMA, copied, dropped.
_ASIDE: tuple[str, ...] = (
    "DROP INDEX IF EXISTS alerts_by_state",
    "DROP INDEX IF EXISTS alerts_by_dedup",
    "DROP INDEX IF EXISTS alerts_by_suppressor",
    "ALTER TABLE alerts RENAME TO alerts_old",
)
_V1_COLUMNS = (
    "alert_id, detection_id, dedup_key, severity, severity_rank, first_seen_s, state, alert_json, enqueued_at,"
    " sent_at, message_id, delivery, summary_id, suppressed_by, attempts, last_error"
)
# The columns each older version has, copied as they are (the newer ones start NULL).
_COPY: dict[int, tuple[str, ...]] = {
    version: (
        f"INSERT INTO alerts ({columns}) SELECT {columns} FROM alerts_old",
        "DROP TABLE alerts_old",
    )
    for version, columns in ((1, _V1_COLUMNS), (2, _V1_COLUMNS + ", realert_s"))
}


class OutboxError(Exception):
    """The outbox cannot do what was asked (missing, damaged, read-only, disk full, busy, unknown id); the
    message names the file and says what to do next."""


def outbox_path(lake: Path) -> Path:
    return Path(lake) / OUTBOX_FILE


# -- errors ------------------------------------------------------------------------------------------------


def _kind(err: sqlite3.Error | OSError) -> str:
    """What went wrong, from SQLite's error name (or the text, for an error without one) or the errno."""
    if isinstance(err, OSError):
        return {
            errno.ENOSPC: "full",
            errno.EDQUOT: "full",
            errno.EROFS: "denied",
            errno.EACCES: "denied",
            errno.EPERM: "denied",
        }.get(err.errno or 0, "other")
    name = getattr(err, "sqlite_errorname", None) or ""
    text = str(err).lower()
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "damaged"
    if name == "SQLITE_FULL" or "disk is full" in text:
        return "full"
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_CANTOPEN")) or any(
        word in text for word in ("readonly", "read-only", "unable to open")
    ):
        return "denied"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return "busy"
    return "other"


def outbox_error(path: Path, err: sqlite3.Error | OSError) -> OutboxError:
    """The one translation of a database or file error about the outbox at `path` into one line of advice."""
    lake, folder = path.parent.parent, path.parent
    cause = f"{type(err).__name__}: {err}"
    kind = _kind(err)
    if kind == "damaged":
        return OutboxError(
            f"the alert outbox {path} is damaged ({cause}): restore it from a backup, or run "
            f"`keytrail alerts repair --lake {lake}` to move it aside and start a fresh one"
        )
    if kind == "full":
        return OutboxError(
            f"cannot write the alert outbox {path}: the disk is full ({cause}): free disk space, then run the "
            "command again"
        )
    if path.is_dir():
        return OutboxError(f"the alert outbox {path} is a directory, not a file ({cause}): move it aside")
    if kind == "denied":
        where = folder if folder.is_dir() else lake
        if not os.access(where, os.W_OK):
            return OutboxError(
                f"cannot write the alert outbox {path}: {where} is read-only for this user ({cause}): fix its "
                "permissions or mount it read-write, then run the command again"
            )
        return OutboxError(
            f"cannot open the alert outbox {path} ({cause}): check the permissions of {path} and {folder} "
            "(keytrail reads and writes both) and that the disk is not read-only or full"
        )
    if kind == "busy":
        return OutboxError(
            f"the alert outbox {path} is locked by another keytrail process ({cause}): wait for it to finish, "
            "then run the command again"
        )
    return OutboxError(
        f"the alert outbox {path} failed ({cause}): check the file, its permissions and free disk space; "
        f"`keytrail alerts repair --lake {lake}` replaces a damaged outbox"
    )


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    """Run a block against the outbox at `path`, turning database and file errors into an OutboxError.

    Integrity and programming errors are keytrail's own bugs: they pass through with their traceback.
    """
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except (sqlite3.DatabaseError, OSError) as err:
        raise outbox_error(path, err) from err


# -- opening -----------------------------------------------------------------------------------------------


def connect(lake: Path, *, create: bool) -> sqlite3.Connection:
    """An autocommit connection to the lake's outbox at the current schema (created or upgraded as needed)."""
    path = outbox_path(lake)
    if not path.exists() and not create:
        raise OutboxError(f"no alert outbox in {lake} yet: run `keytrail detect --lake {lake} --publish` to create it")
    with translated(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write opens its own explicit transaction.
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # a recorded MessageId must survive a crash
            if _version(connection) < _SCHEMA_VERSION:
                _upgrade(connection)
        except BaseException:
            connection.close()
            raise
    return connection


def _version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def _upgrade(connection: sqlite3.Connection) -> None:
    """Create the schema, or bring an older outbox to the current version, in one transaction.

    The version is read again under the write lock: two processes opening an old outbox upgrade it once.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _version(connection)
        if version < _SCHEMA_VERSION:
            older = version in _COPY
            for statement in (*(_ASIDE if older else ()), *_SCHEMA, *(_COPY[version] if older else ())):
                connection.execute(statement)
            connection.execute(_SET_VERSION)
            if older:
                log.info("alert outbox upgraded from version %d to %d", version, _SCHEMA_VERSION)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


# -- repair ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """What `repair` found and did: `moved` holds (from, to) for each file set aside; empty when healthy."""

    path: Path
    exists: bool
    problem: str | None = None
    moved: tuple[tuple[Path, Path], ...] = ()


def repair(lake: Path, *, now: dt.datetime) -> Repair:
    """Check the lake's outbox; when it is damaged, rename it (and its WAL files) to `outbox.sqlite.damaged-<time>`
    beside it and create a fresh, empty outbox. A healthy outbox is left as it is.

    Raises OutboxError when the file cannot be checked for another reason (read-only, disk full): moving it
    aside would not help then.
    """
    path = outbox_path(lake)
    if not path.exists():
        return Repair(path, exists=False)
    problem = _damage(path)
    if problem is None:
        return Repair(path, exists=True)
    aside = path.with_name(f"{path.name}.damaged-{stamp(now)}")
    for n in range(2, 100):  # never overwrite an earlier damaged copy (two repairs within a second)
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.damaged-{stamp(now)}-{n}")
    moved: list[tuple[Path, Path]] = []
    with translated(path):
        for suffix in ("", *_SIDE_FILES):
            source = path.with_name(path.name + suffix)
            if source.exists():
                target = aside.with_name(aside.name + suffix)
                source.rename(target)
                moved.append((source, target))
        connect(lake, create=True).close()
    log.info("alert outbox %s was damaged (%s): moved aside to %s, a fresh one created", path, problem, aside)
    return Repair(path, exists=True, problem=problem, moved=tuple(moved))


def _damage(path: Path) -> str | None:
    """Why the outbox file is damaged (SQLite's own integrity check), or None when it is sound."""
    try:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(5)").fetchall()]
        finally:
            connection.close()
    except (sqlite3.DatabaseError, OSError) as err:
        if _kind(err) == "damaged":
            return f"{type(err).__name__}: {err}"
        raise outbox_error(path, err) from err
    return None if problems == ["ok"] else "; ".join(problems)
