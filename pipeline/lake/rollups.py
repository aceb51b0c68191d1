"""Hourly rollups of the committed events: what detection baselines read instead of months of raw events.

Grain: one row per hour x account (recipient_account_id) x region x caller (the `caller_arn` macro, its account
and principal type, and the service invoking on its behalf) x KMS key (coalesce(key_arn, key_id)) x secret (one
row per secret the call names: a BatchGetSecretValue of 5 secrets counts once for each) x encryption-context
key set (the call's shape, for kms_context_schema_break) x event_source x
event_name x error_code, with the event count, first/last seen, a bounded sample of source IPs and, per
encryption-context key, its distinct values.

Layout: `rollups/hourly-v2/event_date=YYYY-MM-DD/<batch>.parquet`, one file per committed batch and day, written in
the same commit as the batch's events (same intent and ledger record: `BatchRecord.rollups`), computed from the
rows that were actually committed (after the lake-wide duplicate drop). Readers merge a day's files (`read`,
queries/rollups/merge.sql): re-aggregating is cheap (a day of rollups is ~2% of its events' bytes).

Distinct values are stored, not sketched: the smallest `MAX_SOURCE_IPS` distinct source IPs, and per context key
(the smallest `MAX_CONTEXT_KEYS` keys) its smallest `MAX_CONTEXT_VALUES` distinct values, each list with an
overflow flag saying more existed. A count is therefore exact up to its bound and "more than the bound" past it,
and merging is exact: the smallest N of a union are the smallest N of the parts' smallest N, so files of any
batching merge to the rollup of all the events at once (a test checks incremental == rebuild). A mergeable
sketch (HLL) would count past the bound but cannot name values, needs an extension DuckDB would have to load,
and is approximate below the thresholds detections use (tens of values), where these lists are exact.

`rebuild` recreates a day's rollups from its committed events (atomically, same protocol); compaction recomputes
a day's rollups along with its merged events file (`compaction`).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.duckdb_session import close_session, open_session
from pipeline.lake.layout import partition_name, partitions, rollup_partition_dir
from pipeline.lake.ledger import (
    BatchRecord,
    Checkpoint,
    FileEntry,
    claim_staging,
    committed_files,
    committed_rollup_files,
    lake_lock,
    new_batch_id,
    publish,
    recover_locked,
    remove_staging,
)
from pipeline.lake.remote import refuse_replica
from pipeline.sql_files import read_sql
from pipeline.times import iso

log = logging.getLogger(__name__)

MAX_SOURCE_IPS = 16
MAX_CONTEXT_KEYS = 16
MAX_CONTEXT_VALUES = 64  # above the distinct-value thresholds of the context detections (tens)

GROUP_COLUMNS = (
    "hour",
    "event_date",
    "recipient_account_id",
    "aws_region",
    "caller_arn",
    "caller_account_id",
    "principal_type",
    "invoked_by",
    "kms_key",
    "secret_id",
    "context_keys",
    "event_source",
    "event_name",
    "error_code",
)
_TIME = pa.timestamp("us", tz="UTC")
_CONTEXT = pa.struct(
    [
        pa.field("key", pa.string()),
        pa.field("values", pa.list_(pa.string())),
        pa.field("overflow", pa.bool_()),
    ]
)
ROLLUP_SCHEMA = pa.schema(
    [
        pa.field("hour", _TIME, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("recipient_account_id", pa.string()),
        pa.field("aws_region", pa.string()),
        pa.field("caller_arn", pa.string()),
        pa.field("caller_account_id", pa.string()),  # userIdentity.accountId: names callers without an ARN
        pa.field("principal_type", pa.string()),
        pa.field("invoked_by", pa.string()),  # the AWS service calling on the caller's behalf
        pa.field("kms_key", pa.string()),  # coalesce(key_arn, key_id): an alias when nothing else named the key
        pa.field("secret_id", pa.string()),  # one row per secret the call names (secret_ids), NULL for none
        pa.field("context_keys", pa.list_(pa.string())),  # the call's encryption-context key set (sorted), its shape
        pa.field("event_source", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("error_code", pa.string()),
        pa.field("events", pa.int64(), nullable=False),
        pa.field("first_seen", _TIME, nullable=False),
        pa.field("last_seen", _TIME, nullable=False),
        pa.field("source_ips", pa.list_(pa.string())),  # the smallest distinct ones, sorted
        pa.field("source_ips_overflow", pa.bool_()),  # more distinct source IPs than listed
        pa.field("contexts", pa.list_(_CONTEXT)),  # per context key (sorted): its smallest distinct values
        pa.field("contexts_overflow", pa.bool_()),  # more context keys than listed
    ]
)


# --- computing (pure: events in, rollup rows out) -------------------------------------------------------------


def _sql(name: str) -> str:
    return read_sql("rollups", f"{name}.sql")


_local = threading.local()

# The rollup session's DuckDB memory cap: small, so ingest's peak RSS stays low (a 450,000-event day: 454 MiB with
# 160 MB, 796 MiB with 1 GB). Its list aggregates (source IPs, context values) cannot spill, so a batch with more
# distinct values than fit (a 500,000-event batch of a 10 M-event trail) is rolled up again under the larger cap.
MEMORY_LIMIT = "160MB"
MEMORY_LIMIT_LARGE_BATCH = "4GB"


@contextlib.contextmanager
def _session() -> Iterator[duckdb.DuckDBPyConnection]:
    """This thread's rollup database: a keytrail session (macros such as `caller_arn`, UTC, a private spill
    directory), kept small, opened on first use and reused. A new session per commit cost ~20 ms and made the
    first query ~30% slower: a third of the rollups' cost at ingest. One per thread, not per process: flow tasks
    commit on several threads, and their views would clash in one catalog."""
    con = getattr(_local, "con", None)
    if con is None:
        con, spill_dir = open_session(memory_limit=MEMORY_LIMIT)
        con.execute("SET threads = 1")  # a batch's rollup is small: a second thread costs CPU, saves ~0.1 s
        atexit.register(close_session, con, spill_dir)
        _local.con = con
    yield con


def _run(query: str, view: str, source: pa.Table | Sequence[Path]) -> pa.Table:
    """Run queries/rollups/<query>.sql over `source` (a table, or Parquet files) seen as `view`."""
    if not isinstance(source, pa.Table) and not source:
        return ROLLUP_SCHEMA.empty_table()
    with _session() as con:
        if isinstance(source, pa.Table):
            con.register(view, source)
        else:
            con.register(view, con.read_parquet([str(path) for path in source], hive_partitioning=False))
        bounds = {"max_ips": MAX_SOURCE_IPS, "max_keys": MAX_CONTEXT_KEYS, "max_values": MAX_CONTEXT_VALUES}
        try:
            try:
                table = con.sql(_sql(query), params=bounds).to_arrow_table()
            except duckdb.OutOfMemoryException:
                log.info("rollup of a large batch: retrying under a %s memory cap", MEMORY_LIMIT_LARGE_BATCH)
                con.execute(f"SET memory_limit = '{MEMORY_LIMIT_LARGE_BATCH}'")
                try:
                    table = con.sql(_sql(query), params=bounds).to_arrow_table()
                finally:
                    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        finally:
            con.unregister(view)  # the session is reused: the next call registers its own source
    return table.cast(ROLLUP_SCHEMA)


def hourly(events: pa.Table | Sequence[Path]) -> pa.Table:
    """The hourly rollup of committed events (a table, or event Parquet files), sorted by its group columns."""
    return _run("hourly", "committed_events", events)


def merge(rollups: pa.Table | Sequence[Path]) -> pa.Table:
    """Rollup rows (of any batching) merged into one row per hour and group, sorted: equal to `hourly` of all
    their events at once."""
    return _run("merge", "rollup_rows", rollups)


def by_day(rollups: pa.Table) -> list[tuple[dt.date, pa.Table]]:
    """A rollup table split into its days, in day order."""
    days = rollups.column("event_date")
    return [(day.as_py(), rollups.filter(pc.equal(days, day))) for day in pc.unique(days).sort()]


def stage(events: pa.Table | Sequence[Path], folder: Path, name: str) -> list[tuple[dt.date, Path, int]]:
    """Compute the rollup of `events` and write one file per day, `<folder>/event_date=D/<name>.parquet`.
    Returns (day, path, rows) of each file."""
    return _write_days(hourly(events), folder, name)


def stage_merged(pieces: Sequence[pa.Table], folder: Path, name: str) -> list[tuple[dt.date, Path, int]]:
    """`stage` for events whose rollups were computed in pieces (where ingest workers wrote them): the pieces
    merged, one file per day."""
    pieces = [piece for piece in pieces if piece.num_rows]
    if len(pieces) > 1:
        return _write_days(merge(pa.concat_tables(pieces)), folder, name)
    return _write_days(pieces[0] if pieces else ROLLUP_SCHEMA.empty_table(), folder, name)


def _write_days(table: pa.Table, folder: Path, name: str) -> list[tuple[dt.date, Path, int]]:
    staged = []
    for day, rows in by_day(table):
        path = folder / partition_name(day) / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path, compression="zstd")
        staged.append((day, path, rows.num_rows))
    return staged


def moves(lake: Path, staged: Sequence[tuple[dt.date, Path, int]]) -> tuple[list[tuple[Path, Path]], list[FileEntry]]:
    """Where staged rollup files go in the lake, and their ledger entries."""
    pairs, entries = [], []
    for day, path, rows in staged:
        target = rollup_partition_dir(lake, day) / path.name
        pairs.append((path, target))
        entries.append(FileEntry(target.relative_to(lake).as_posix(), rows))
    return pairs, entries


# --- reading ------------------------------------------------------------------------------------------------


def read(lake: Path, start: dt.date | None = None, end: dt.date | None = None) -> pa.Table:
    """The committed hourly rollups of the days in [start, end] (inclusive; None = unbounded), merged."""
    return merge(committed_rollup_files(Path(lake), start, end))


# --- rebuilding ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebuildReport:
    day: dt.date
    events: int  # committed events of the day
    files_before: int  # rollup files replaced
    rows: int  # rollup rows written


def rebuild(
    lake: Path, day: dt.date, now: dt.datetime | None = None, checkpoint: Checkpoint | None = None
) -> RebuildReport:
    """Recreate a day's rollups from its committed events, atomically: one new file replaces the day's rollup
    files in one commit (readers see the old rollups or the new, never both). Runs under the lake lock, so the
    day's events cannot change meanwhile (a day of KMS/SM events takes seconds)."""
    lake = Path(lake)
    refuse_replica(lake, "a rollups rebuild")
    batch_id = new_batch_id(now)
    with lake_lock(lake):
        recover_locked(lake)
        staging, handle = claim_staging(lake, batch_id)  # so a crash leaves staging `recover` removes
        with handle:
            events = committed_files(lake, day, day)
            before = committed_rollup_files(lake, day, day)
            staged = stage(events, staging, batch_id)
            pairs, entries = moves(lake, staged)
            record = BatchRecord(
                batch_id=batch_id,
                kind="rollup",
                committed_at=iso(now) if now is not None else None,
                rollups=entries,
                superseded=[path.relative_to(lake).as_posix() for path in before],
            )
            publish(lake, record, [], checkpoint, pairs)
    remove_staging(staging)
    count = sum(pq.read_metadata(path).num_rows for path in events)
    log.info("rebuilt the rollups of %s: %d events -> %d rows", day, count, sum(e.rows for e in entries))
    return RebuildReport(day, count, len(before), sum(entry.rows for entry in entries))


def rebuild_days(lake: Path) -> list[dt.date]:
    """The days `rebuild` should visit for a whole lake: every day with events or with rollups."""
    return sorted(set(partitions(lake)) | set(partitions(lake, rollups=True)))
