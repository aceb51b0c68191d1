"""The Parquet lake: partition paths, atomic idempotent batches, the ledger, quarantine, compaction.

Layout under `<lake>/`:

    events/event_date=YYYY-MM-DD/<batch>-NNN.parquet   committed events (EVENTS_SCHEMA, zstd, 64k-row groups)
    quarantine/objects/<name> + <name>.reason.json     unreadable source objects, verbatim, with the reason
    quarantine/records/<name>.jsonl                     rejected records of readable objects, one per line
    _ledger/batches/<batch>.json                        one record per committed batch: the commit point
    _ledger/ids/<batch>.parquet                         the event_ids a batch added (global uniqueness check)
    _ledger/intents/<batch>.json                        a commit in progress (only while one is running)
    _ledger/lock                                        flock: commits, compactions and recovery run one at a time
    _staging/<batch>/...  + <batch>.lock                a writer's files before commit (held flock = alive)

Commit protocol (under the lake lock): recover, drop event_ids already committed, write the intent, rename the
staged files into `events/`, write the ledger record (the commit point), delete the intent. A crash before the
ledger record leaves an intent that the next writer's `recover` rolls back (renamed files deleted); after it,
`recover` only finishes the cleanup. `committed_files` hides the files of unfinished intents, so the engine
never sees half a batch; plain globs over `events/**/*.parquet` see only committed data once `recover` ran.

`event_id` is unique across the whole lake, not just per partition: real CloudTrail repeats an eventID only
within one eventTime, but published samples reuse placeholder eventIDs across years, and readers are promised
one row per event_id. The check streams the compact id index, not the events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.events import EVENTS_SCHEMA, RejectedRecord
from pipeline.times import iso, stamp

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 65_536
# Rows buffered in memory across all partitions of a batch before the largest buffer is written out early
# (one row group: ~80 MB of Arrow for CloudTrail rows; this is most of the memory a run needs).
MAX_BUFFERED_ROWS = 65_536
# A partition file of one batch rolls over to a new file past this many rows.
MAX_FILE_ROWS = 4_194_304
# Up to this many committed event_ids are probed in memory; a bigger id index is scanned by DuckDB (already at
# 500k ids that is faster and ~100 MB lighter than hashing them in pyarrow).
_ID_CHUNK = 1 << 17
_SCHEMA = EVENTS_SCHEMA.with_metadata(None)
# Called with a stage name at the points where a crash matters; tests raise from it to simulate one.
Checkpoint = Callable[[str], None]
_ID_SCHEMA = pa.schema([pa.field("event_id", pa.string(), nullable=False), pa.field("event_date", pa.date32())])


# --- layout ---------------------------------------------------------------------------------------------


def events_dir(lake: Path) -> Path:
    return Path(lake) / "events"


def quarantine_dir(lake: Path) -> Path:
    return Path(lake) / "quarantine"


def _ledger_dir(lake: Path) -> Path:
    return Path(lake) / "_ledger"


def _batches_dir(lake: Path) -> Path:
    return _ledger_dir(lake) / "batches"


def _ids_dir(lake: Path) -> Path:
    return _ledger_dir(lake) / "ids"


def _intents_dir(lake: Path) -> Path:
    return _ledger_dir(lake) / "intents"


def _staging_dir(lake: Path) -> Path:
    return Path(lake) / "_staging"


def partition_dir(lake: Path, day: dt.date) -> Path:
    return events_dir(lake) / f"event_date={day.isoformat()}"


def _partition_day(name: str) -> dt.date | None:
    if not name.startswith("event_date="):
        return None
    try:
        return dt.date.fromisoformat(name[len("event_date=") :])
    except ValueError:
        return None


# --- records ----------------------------------------------------------------------------------------------


class ObjectEntry(msgspec.Struct, omit_defaults=True):
    """One source object a batch consumed. `status` is 'ingested' or 'quarantined'."""

    bucket: str
    key: str
    etag: str
    size: int
    status: str = "ingested"
    events_seen: int = 0
    events_kept: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    reason: str | None = None

    @property
    def identity(self) -> tuple[str, str, str]:
        return self.bucket, self.key, self.etag


class FileEntry(msgspec.Struct):
    path: str  # relative to the lake
    rows: int


class BatchRecord(msgspec.Struct, omit_defaults=True):
    """A ledger record (also the shape of an intent). `kind` is 'ingest' or 'compact'."""

    batch_id: str
    kind: str
    committed_at: str | None  # None when the caller passed no `now` (library code reads no clock)
    files: list[FileEntry] = msgspec.field(default_factory=list)
    superseded: list[str] = msgspec.field(default_factory=list)  # files a compaction replaced
    id_index: str | None = None
    objects: list[ObjectEntry] = msgspec.field(default_factory=list)
    events_kept: int = 0
    events_duplicate: int = 0


_record_decoder = msgspec.json.Decoder(BatchRecord)


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename: the file is either absent or whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_ledger(lake: Path) -> Iterator[BatchRecord]:
    """Every committed batch record, in batch-id order (batch ids start with their commit time)."""
    folder = _batches_dir(lake)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        yield _record_decoder.decode(path.read_bytes())


def ingested_objects(lake: Path) -> set[tuple[str, str, str]]:
    """(bucket, key, etag) of every source object a committed batch consumed (ingested or quarantined)."""
    return {entry.identity for record in read_ledger(lake) for entry in record.objects}


# --- locking and recovery ---------------------------------------------------------------------------------


@contextlib.contextmanager
def lake_lock(lake: Path) -> Iterator[None]:
    """Exclusive lock over the lake's ledger: one commit, compaction or recovery at a time (all processes)."""
    folder = _ledger_dir(lake)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _committed(lake: Path, batch_id: str) -> bool:
    return (_batches_dir(lake) / f"{batch_id}.json").exists()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _recover_locked(lake: Path) -> int:
    """Finish or roll back interrupted commits and drop dead writers' staging. Caller holds the lake lock."""
    repaired = 0
    intents = _intents_dir(lake)
    for intent_path in sorted(intents.glob("*.json")) if intents.is_dir() else []:
        intent = _record_decoder.decode(intent_path.read_bytes())
        if _committed(lake, intent.batch_id):  # committed: finish the cleanup (a compaction's old files)
            for rel in intent.superseded:
                _unlink(Path(lake) / rel)
        else:  # not committed: undo the renames
            for entry in intent.files:
                _unlink(Path(lake) / entry.path)
            if intent.id_index:
                _unlink(Path(lake) / intent.id_index)
        log.warning("recovered interrupted %s batch %s", intent.kind, intent.batch_id)
        intent_path.unlink()
        repaired += 1
    staging = _staging_dir(lake)
    for lock_path in sorted(staging.glob("*.lock")) if staging.is_dir() else []:
        # "r+b", never "a+b": re-creating the lock of a writer that just committed would make it look dead;
        # a lock gone before we open it belongs to a writer that finished (the suppress skips it).
        with contextlib.suppress(FileNotFoundError), open(lock_path, "r+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            if not lock_path.exists():
                continue  # unlinked by its writer (after a commit) between our open and flock
            shutil.rmtree(staging / lock_path.stem, ignore_errors=True)
            _unlink(lock_path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            log.warning("removed staging of dead writer %s", lock_path.stem)
            repaired += 1
    return repaired


def recover(lake: Path) -> int:
    """Repair what a crashed writer left behind; returns how many leftovers were handled. Idempotent."""
    with lake_lock(lake):
        return _recover_locked(lake)


# --- readers ------------------------------------------------------------------------------------------------


def _hidden_files(lake: Path) -> set[Path]:
    """Files in events/ that readers must not see: those of commits or compactions still in progress."""
    hidden: set[Path] = set()
    intents = _intents_dir(lake)
    for intent_path in intents.glob("*.json") if intents.is_dir() else []:
        try:
            intent = _record_decoder.decode(intent_path.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            continue  # finished meanwhile, or still being written (its files are not in events/ yet)
        if _committed(lake, intent.batch_id):
            hidden.update(Path(lake) / rel for rel in intent.superseded)
        else:
            hidden.update(Path(lake) / entry.path for entry in intent.files)
    return hidden


def _partition_dirs(lake: Path, start: dt.date | None, end: dt.date | None) -> list[Path]:
    if start is not None and end is not None:
        if end < start:
            return []
        if (end - start).days <= 366:  # probe the range's days: cost follows the range, not the lake
            days = (start + dt.timedelta(days=offset) for offset in range((end - start).days + 1))
            return [path for path in (partition_dir(lake, day) for day in days) if path.is_dir()]
    root = events_dir(lake)
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        day = _partition_day(entry.name)
        if day is not None and entry.is_dir() and (start is None or day >= start) and (end is None or day <= end):
            found.append(Path(entry.path))
    return sorted(found)


def committed_files(lake: Path, start: dt.date | None = None, end: dt.date | None = None) -> list[Path]:
    """The committed Parquet files of the partitions in [start, end] (inclusive; None = unbounded), sorted."""
    hidden = _hidden_files(lake)
    files: list[Path] = []
    for folder in _partition_dirs(lake, start, end):
        files.extend(sorted(path for path in folder.glob("*.parquet") if path not in hidden))
    hidden |= _hidden_files(lake)  # an intent that appeared while listing
    return [path for path in files if path not in hidden]


def _committed_id_files(lake: Path) -> list[Path]:
    folder = _ids_dir(lake)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def committed_duplicates(lake: Path, ids: pa.Array) -> set[str]:
    """Which of `ids` are already committed anywhere in the lake. Memory is bounded whatever the lake size."""
    files = _committed_id_files(lake)
    if len(ids) == 0 or not files:
        return set()
    if sum(pq.read_metadata(path).num_rows for path in files) > _ID_CHUNK:
        return _scan_id_index(files, ids)
    values = pa.concat_arrays([pq.read_table(path, columns=["event_id"]).column(0).combine_chunks() for path in files])
    return set(ids.filter(pc.is_in(ids, value_set=values)).to_pylist())


def _scan_id_index(files: list[Path], ids: pa.Array) -> set[str]:
    """`committed_duplicates` for a big id index: DuckDB scans it in parallel against a hash of the new ids.

    Against 30 M committed ids: ~2.3 s and +120 MB per commit, where hashing the index in pyarrow chunks took
    ~12.5 s and +380 MB (and every commit of a backfill pays it)."""
    import duckdb  # only big lakes need it

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "memory_limit": "256MB"})
    try:
        con.register("new_ids", pa.table({"event_id": ids}))
        rows = con.execute(
            "SELECT DISTINCT event_id FROM read_parquet($files) WHERE event_id IN (SELECT event_id FROM new_ids)",
            {"files": [str(path) for path in files]},
        ).fetchall()
    finally:
        con.close()
    return {row[0] for row in rows}


# --- writing a batch ------------------------------------------------------------------------------------------


def new_batch_id(now: dt.datetime | None) -> str:
    """Unique across concurrent writers; sorts by time when the caller passed `now`."""
    suffix = uuid.uuid4().hex[:12]
    return f"{stamp(now)}-{suffix}" if now is not None else suffix


class _PartitionFile:
    """The staged file(s) of one partition in one batch, written a row group at a time."""

    def __init__(self, folder: Path, batch_id: str) -> None:
        self.folder = folder
        self.batch_id = batch_id
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.paths: list[Path] = []
        self.rows: list[int] = []
        self._writer: pq.ParquetWriter | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        self.buffer.append(batch)
        self.buffered += batch.num_rows

    def flush(self) -> None:
        if not self.buffered:
            return
        if self._writer is None or self.rows[-1] >= MAX_FILE_ROWS:
            self._close_writer()
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.batch_id}-{len(self.paths):03d}.parquet"
            self._writer = _parquet_writer(path)
            self.paths.append(path)
            self.rows.append(0)
        self._writer.write_table(pa.Table.from_batches(self.buffer, schema=_SCHEMA), row_group_size=ROW_GROUP_ROWS)
        self.rows[-1] += self.buffered
        self.buffer, self.buffered = [], 0

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self.flush()
        self._close_writer()


def _parquet_writer(path: Path) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, _SCHEMA, compression="zstd", write_statistics=True)


class BatchWriter:
    """Collects events for one batch: de-duplicates event_ids, stages partition files, commits atomically.

    Use as a context manager (it holds the staging lock that tells `recover` this writer is alive). Safe to run
    concurrently with other writers on the same lake; their commits are serialized by the lake lock.
    """

    def __init__(self, lake: Path, now: dt.datetime | None = None) -> None:
        self.lake = Path(lake)
        self.now = now
        self.batch_id = new_batch_id(now)
        self.staging = _staging_dir(self.lake) / self.batch_id
        self._seen: set[str] = set()
        self._ids: list[pa.RecordBatch] = []  # (event_id, event_date) of every row added: the batch's id index
        self._partitions: dict[dt.date, _PartitionFile] = {}
        self._buffered = 0
        self._lock_handle: IO[bytes] | None = None
        self.events_kept = 0
        self.events_duplicate = 0

    def __enter__(self) -> BatchWriter:
        with lake_lock(self.lake):  # so `recover` never sees the lock file before it is held
            self.staging.mkdir(parents=True, exist_ok=True)
            self._lock_handle = open(self.staging.with_suffix(".lock"), "a+b")  # held until __exit__
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        for part in self._partitions.values():
            part._close_writer()
        if self._lock_handle is not None:
            self._lock_handle.close()  # releases the flock; leftovers are `recover`'s job
            self._lock_handle = None

    @property
    def rows(self) -> int:
        return self.events_kept

    def add(self, batch: pa.RecordBatch) -> tuple[int, int]:
        """Add normalized events; returns (kept, duplicates). The first copy of an event_id wins."""
        return self.add_runs(batch, [batch.num_rows])[0]

    def add_runs(self, batch: pa.RecordBatch, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """`add` for a batch made of consecutive runs of `sizes` rows (one run per source object, so ingest
        can build one batch from many small objects): (kept, duplicates) per run."""
        ids = batch.column(0).to_pylist()
        seen = self._seen
        fresh = set(ids)
        if len(fresh) == len(ids) and seen.isdisjoint(fresh):  # the usual case, checked in C
            seen |= fresh
            counts = [(size, 0) for size in sizes]
        else:
            keep = []
            for event_id in ids:
                if event_id in seen:
                    keep.append(False)
                else:
                    seen.add(event_id)
                    keep.append(True)
            counts, start = [], 0
            for size in sizes:
                kept_here = sum(keep[start : start + size])
                counts.append((kept_here, size - kept_here))
                start += size
            if not all(keep):
                batch = batch.filter(pa.array(keep, type=pa.bool_()))
        kept = sum(kept_here for kept_here, _ in counts)
        if kept:
            self._add_to_partitions(batch)
        self.events_kept += kept
        self.events_duplicate += len(ids) - kept
        return counts

    def _add_to_partitions(self, batch: pa.RecordBatch) -> None:
        self._ids.append(batch.select(["event_id", "event_date"]))
        dates = batch.column("event_date")
        low, high = pc.min_max(dates).values()
        if low == high:
            groups = [(low.as_py(), batch)]
        else:
            groups = [(day.as_py(), batch.filter(pc.equal(dates, day))) for day in pc.unique(dates)]
        for day, part in groups:
            target = self._partitions.get(day)
            if target is None:
                folder = self.staging / f"event_date={day.isoformat()}"
                target = self._partitions[day] = _PartitionFile(folder, self.batch_id)
            target.add(part)
            self._buffered += part.num_rows
            if target.buffered >= ROW_GROUP_ROWS:
                self._buffered -= target.buffered
                target.flush()
        while self._buffered > MAX_BUFFERED_ROWS:  # bounded memory: write the largest buffer early
            largest = max(self._partitions.values(), key=lambda p: p.buffered)
            self._buffered -= largest.buffered
            largest.flush()

    def _staged(self) -> list[tuple[dt.date, Path, int]]:
        staged = []
        for day, part in sorted(self._partitions.items()):
            part.close()
            staged.extend((day, path, rows) for path, rows in zip(part.paths, part.rows, strict=True))
        self._buffered = 0
        return staged

    def commit(self, objects: dict[str, ObjectEntry], checkpoint: Checkpoint | None = None) -> BatchRecord:
        """Publish the batch atomically with the ledger record of the objects it consumed.

        `objects` maps each object's `source_object` value to its entry; entries whose rows turn out to be
        committed already (by another batch) have those rows moved from kept to duplicate.
        """
        staged = self._staged()
        self._seen = set()  # free the memory before reading the committed id index
        # Hand the written buffers back to the OS: the id probe below allocates from other threads, which
        # the Arrow pool would not reuse them for (+120 MB resident per commit otherwise).
        pa.default_memory_pool().release_unused()
        id_index = self.staging / "ids.parquet"
        ids = pa.Table.from_batches(self._ids).cast(_ID_SCHEMA) if self._ids else _ID_SCHEMA.empty_table()
        self._ids = []
        if staged:  # from memory: reading the staged files back cost ~5% of an ingest run
            pq.write_table(ids, id_index, compression="zstd")
        with lake_lock(self.lake):
            _recover_locked(self.lake)
            dropped = self._drop_committed(staged, id_index, ids.column(0).combine_chunks()) if staged else {}
            for source, count in dropped.items():
                objects[source].events_kept -= count
                objects[source].events_duplicate += count
            record = BatchRecord(
                batch_id=self.batch_id,
                kind="ingest",
                committed_at=iso(self.now) if self.now is not None else None,
                objects=list(objects.values()),
                events_kept=self.events_kept,
                events_duplicate=self.events_duplicate,
            )
            moves: list[tuple[Path, Path]] = []
            for day, path, rows in staged:
                if rows == 0:
                    continue
                target = partition_dir(self.lake, day) / path.name
                moves.append((path, target))
                record.files.append(FileEntry(target.relative_to(self.lake).as_posix(), rows))
            if moves:
                index_target = _ids_dir(self.lake) / f"{self.batch_id}.parquet"
                moves.append((id_index, index_target))
                record.id_index = index_target.relative_to(self.lake).as_posix()
            _publish(self.lake, record, moves, checkpoint)
        shutil.rmtree(self.staging, ignore_errors=True)
        _unlink(self.staging.with_suffix(".lock"))
        pa.default_memory_pool().release_unused()
        return record

    def _drop_committed(self, staged: list[tuple[dt.date, Path, int]], id_index: Path, ids: pa.Array) -> dict[str, int]:
        """Remove rows whose event_id another batch committed meanwhile (rare: a re-delivered event)."""
        clash = committed_duplicates(self.lake, ids)
        if not clash:
            return {}
        clash_ids = pa.array(sorted(clash), type=pa.string())
        dropped: dict[str, int] = {}
        for position, (day, path, _rows) in enumerate(staged):
            ids_in_file = pq.read_table(path, columns=["event_id"]).column(0)
            if not pc.any(pc.is_in(ids_in_file, value_set=clash_ids)).as_py():
                continue
            rewritten = path.with_name(f"{path.stem}.dedup.parquet")
            kept_rows = 0
            with _parquet_writer(rewritten) as writer:  # row group by row group: memory stays bounded
                for group in range(pq.ParquetFile(path).num_row_groups):
                    table = pq.ParquetFile(path).read_row_group(group)
                    hit = pc.is_in(table.column("event_id"), value_set=clash_ids)
                    for source in table.filter(hit).column("source_object").to_pylist():
                        dropped[source] = dropped.get(source, 0) + 1
                    kept = table.filter(pc.invert(hit))
                    writer.write_table(kept, row_group_size=ROW_GROUP_ROWS)
                    kept_rows += kept.num_rows
            os.replace(rewritten, path)
            staged[position] = (day, path, kept_rows)
        removed = sum(dropped.values())
        self.events_kept -= removed
        self.events_duplicate += removed
        _write_id_index(id_index, [path for _, path, rows in staged if rows])
        return dropped


def _write_id_index(target: Path, files: Iterable[Path]) -> None:
    tables = [pq.read_table(path, columns=["event_id", "event_date"]) for path in files]
    table = pa.concat_tables(tables).cast(_ID_SCHEMA) if tables else _ID_SCHEMA.empty_table()
    pq.write_table(table, target, compression="zstd")


def _publish(lake: Path, record: BatchRecord, moves: list[tuple[Path, Path]], checkpoint: Checkpoint | None) -> None:
    """Intent, renames, ledger record (the commit point), intent removed. Caller holds the lake lock."""
    intent_path = _intents_dir(lake) / f"{record.batch_id}.json"
    _write_atomic(intent_path, msgspec.json.encode(record))
    for source, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    if checkpoint is not None:
        checkpoint("files-published")  # tests inject a crash here: files visible in events/, no ledger record
    _write_atomic(_batches_dir(lake) / f"{record.batch_id}.json", msgspec.json.encode(record))
    if checkpoint is not None:
        checkpoint("ledger-written")  # committed; a compaction's old files not yet deleted
    for rel in record.superseded:
        _unlink(Path(lake) / rel)
    intent_path.unlink()


# --- quarantine ------------------------------------------------------------------------------------------------


def _quarantine_name(entry: ObjectEntry, content: bytes) -> str:
    # Named by object and content, not etag: re-reading a still-bad object (even one re-uploaded or touched)
    # overwrites its entry instead of adding another.
    digest = hashlib.sha256(f"{entry.bucket}\0{entry.key}\0".encode() + hashlib.sha256(content).digest())
    return f"{digest.hexdigest()[:16]}-{entry.key.rsplit('/', 1)[-1]}"


def quarantine_object(lake: Path, entry: ObjectEntry, source: str, data: bytes) -> Path:
    """Keep an unreadable object verbatim beside a JSON file with the reason; returns the object's path."""
    folder = quarantine_dir(lake) / "objects"
    path = folder / _quarantine_name(entry, data)
    _write_atomic(path, data)
    reason = {"source": source, **msgspec.to_builtins(entry)}
    _write_atomic(path.with_name(path.name + ".reason.json"), msgspec.json.encode(reason))
    return path


def quarantine_records(lake: Path, entry: ObjectEntry, source: str, rejected: list[RejectedRecord]) -> Path:
    """Keep the rejected records of an object as JSON lines (reason + the record's verbatim JSON text)."""
    name = _quarantine_name(entry, b"\n".join(r.raw for r in rejected))
    path = quarantine_dir(lake) / "records" / f"{name}.jsonl"
    lines = [
        msgspec.json.encode(
            {
                "source": source,
                "bucket": entry.bucket,
                "key": entry.key,
                "etag": entry.etag,
                "index": r.index,
                "reason": r.reason,
                "record": r.raw.decode("utf-8", "replace"),
            }
        )
        for r in rejected
    ]
    _write_atomic(path, b"\n".join(lines) + b"\n")
    return path


# --- compaction -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactReport:
    day: dt.date
    files_before: int
    files_after: int
    rows: int
    path: Path | None  # the merged file, None when there was nothing to merge


def compact(
    lake: Path, day: dt.date, now: dt.datetime | None = None, checkpoint: Checkpoint | None = None
) -> CompactReport:
    """Merge a partition's committed files into one file sorted by event_time, atomically.

    Readers see the same rows before, during and after (the old files are hidden the moment the new one is
    committed). Reads the whole partition into memory: partitions are one day of KMS/SM events.
    """
    lake = Path(lake)
    recover(lake)
    before = committed_files(lake, day, day)
    if len(before) <= 1:
        rows = pq.ParquetFile(before[0]).metadata.num_rows if before else 0
        return CompactReport(day, len(before), len(before), rows, None)
    table = pa.concat_tables(pq.read_table(path, schema=_SCHEMA) for path in before)
    table = table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    batch_id = new_batch_id(now)
    staging = _staging_dir(lake) / batch_id
    staging.mkdir(parents=True, exist_ok=True)
    with open(staging.with_suffix(".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        staged = staging / f"{batch_id}-000.parquet"
        writer = _parquet_writer(staged)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.close()
        target = partition_dir(lake, day) / staged.name
        with lake_lock(lake):
            _recover_locked(lake)
            if any(not path.exists() for path in before):
                raise RuntimeError(f"partition {day} changed during compaction (another compact?): run it again")
            record = BatchRecord(
                batch_id=batch_id,
                kind="compact",
                committed_at=iso(now) if now is not None else None,
                files=[FileEntry(target.relative_to(lake).as_posix(), table.num_rows)],
                superseded=[path.relative_to(lake).as_posix() for path in before],
            )
            _publish(lake, record, [(staged, target)], checkpoint)
    shutil.rmtree(staging, ignore_errors=True)
    _unlink(staging.with_suffix(".lock"))
    log.info("compacted %s: %d files -> 1 (%d rows)", day, len(before), table.num_rows)
    return CompactReport(day, len(before), 1, table.num_rows, target)


def partitions(lake: Path) -> list[dt.date]:
    """Every partition day present in the lake."""
    return [day for folder in _partition_dirs(lake, None, None) if (day := _partition_day(folder.name))]
