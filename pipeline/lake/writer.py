"""Writing one batch: staged partition files, event_id de-duplication, and the ledger entry of every source object.

The writer is the one place that accounts for source objects: which rows each contributed, how many of them were
kept or duplicates (also after the commit drops rows another batch committed meanwhile), how many records it
held and how many were rejected, or why it could not be read. The ledger record's totals, and an ingest run's,
are sums of those entries.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.events import RejectedRecord
from pipeline.lake import rollups
from pipeline.lake.files import ROW_GROUP_ROWS, PartitionFile, parquet_writer
from pipeline.lake.ids import ID_SCHEMA, committed_duplicates, write_id_index
from pipeline.lake.layout import ids_dir, partition_dir, partition_name, staging_dir
from pipeline.lake.ledger import (
    BatchRecord,
    Checkpoint,
    FileEntry,
    ObjectEntry,
    claim_staging,
    lake_lock,
    new_batch_id,
    publish,
    recover_locked,
    remove_staging,
)
from pipeline.lake.quarantine import quarantine_object, quarantine_records
from pipeline.times import iso

# Rows buffered in memory across all partitions of a batch before the largest buffer is written out early
# (one row group: ~80 MB of Arrow for CloudTrail rows; this is most of the memory a run needs).
MAX_BUFFERED_ROWS = 65_536


class SourceObject(Protocol):
    """A source object as the ledger knows it (`pipeline.s3.LogObject` is one). Its rows carry `source` as
    their `source_object`."""

    @property
    def source(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def etag(self) -> str: ...
    @property
    def size(self) -> int: ...


class BatchWriter:
    """Collects events for one batch: de-duplicates event_ids, stages partition files, records each source
    object's ledger entry, commits atomically.

    Use as a context manager (it holds the staging lock that tells `recover` this writer is alive). Safe to run
    concurrently with other writers on the same lake; their commits are serialized by the lake lock.
    """

    def __init__(self, lake: Path, now: dt.datetime | None = None) -> None:
        self.lake = Path(lake)
        self.now = now
        self.batch_id = new_batch_id(now)
        self.staging = staging_dir(self.lake) / self.batch_id
        self._seen: set[str] = set()
        self._ids: list[pa.RecordBatch] = []  # (event_id, event_date) of every row added: the batch's id index
        self._partitions: dict[dt.date, PartitionFile] = {}
        self._buffered = 0
        self._lock_handle: IO[bytes] | None = None
        self._objects: dict[str, ObjectEntry] = {}  # source -> ledger entry, in the order the objects came
        self._rows = 0

    def __enter__(self) -> BatchWriter:
        with lake_lock(self.lake):
            self.staging, self._lock_handle = claim_staging(self.lake, self.batch_id)  # held until __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        for part in self._partitions.values():
            part.close_file()
        if self._lock_handle is not None:
            self._lock_handle.close()  # releases the flock; leftovers are `recover`'s job
            self._lock_handle = None

    @property
    def rows(self) -> int:
        """Rows kept so far."""
        return self._rows

    @property
    def empty(self) -> bool:
        """No source object recorded yet: nothing to commit."""
        return not self._objects

    def _entry(self, obj: SourceObject) -> ObjectEntry:
        entry = self._objects.get(obj.source)
        if entry is None:
            entry = self._objects[obj.source] = ObjectEntry(obj.bucket, obj.key, obj.etag, obj.size)
        return entry

    # --- per-object results -----------------------------------------------------------------------------------

    def add(self, batch: pa.RecordBatch, objects: Sequence[tuple[SourceObject, int]]) -> tuple[int, int]:
        """Add normalized events made of consecutive runs of rows, one run per source object ((object, rows)
        pairs in order, empty runs allowed), so one batch can hold many small objects. The first copy of an
        event_id wins; each object's kept and duplicate rows go to its entry. Returns (kept, duplicates)."""
        named = sum(rows for _, rows in objects)
        if named != batch.num_rows:
            raise ValueError(f"the runs name {named} rows but the batch has {batch.num_rows}")
        ids = batch.column(0).to_pylist()
        seen = self._seen
        fresh = set(ids)
        keep: list[bool] | None = None
        if len(fresh) == len(ids) and seen.isdisjoint(fresh):  # the usual case, checked in C
            seen |= fresh
        else:
            keep = []
            for event_id in ids:
                if event_id in seen:
                    keep.append(False)
                else:
                    seen.add(event_id)
                    keep.append(True)
        start = 0
        for obj, size in objects:
            kept_here = size if keep is None else sum(keep[start : start + size])
            entry = self._entry(obj)
            entry.events_kept += kept_here
            entry.events_duplicate += size - kept_here
            start += size
        kept = len(ids) if keep is None else sum(keep)
        if kept < len(ids):
            batch = batch.filter(pa.array(keep, type=pa.bool_()))
        if kept:
            self._add_to_partitions(batch)
        self._rows += kept
        return kept, len(ids) - kept

    def record_read(self, obj: SourceObject, seen: int, rejected: Sequence[RejectedRecord] = ()) -> Path | None:
        """Record an object that was read (its rows already added): the records it held and the ones rejected,
        which are quarantined. Returns where the rejected records are kept, if any."""
        entry = self._entry(obj)
        entry.events_seen = seen
        if not rejected:
            return None
        entry.events_rejected = len(rejected)
        return quarantine_records(self.lake, entry, obj.source, rejected)

    def record_unreadable(self, obj: SourceObject, reason: str, data: bytes | None) -> Path:
        """Record an object that could not be read: its entry says why, its bytes (None: never read) are
        quarantined verbatim. Returns where they are kept (or its reason, without bytes)."""
        entry = self._entry(obj)
        entry.status, entry.reason = "quarantined", reason
        return quarantine_object(self.lake, entry, obj.source, data)

    # --- staging and committing -------------------------------------------------------------------------------

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
                target = self._partitions[day] = PartitionFile(self.staging / partition_name(day), self.batch_id)
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

    def commit(self, checkpoint: Checkpoint | None = None) -> BatchRecord:
        """Publish the batch atomically with the ledger entries of the objects it consumed. Rows whose event_id
        another batch committed meanwhile are dropped and counted as their objects' duplicates."""
        staged = self._staged()
        self._seen = set()  # free the memory before reading the committed id index
        # Hand the written buffers back to the OS: the id probe below allocates from other threads, which
        # the Arrow pool would not reuse them for (+120 MB resident per commit otherwise).
        pa.default_memory_pool().release_unused()
        id_index = self.staging / "ids.parquet"
        ids = pa.Table.from_batches(self._ids).cast(ID_SCHEMA) if self._ids else ID_SCHEMA.empty_table()
        self._ids = []
        if staged:  # from memory: reading the staged files back cost ~5% of an ingest run
            pq.write_table(ids, id_index, compression="zstd")
        staged_rollups = self._stage_rollups(staged)  # outside the lock; redone below if rows were dropped
        with lake_lock(self.lake):
            recover_locked(self.lake)
            if staged:
                rows_before = [rows for _, _, rows in staged]
                self._drop_committed(staged, id_index, ids.column(0).combine_chunks())
                if [rows for _, _, rows in staged] != rows_before:  # rollups count committed rows only
                    staged_rollups = self._stage_rollups(staged)
            objects = list(self._objects.values())
            record = BatchRecord(
                batch_id=self.batch_id,
                kind="ingest",
                committed_at=iso(self.now) if self.now is not None else None,
                objects=objects,
                events_kept=sum(entry.events_kept for entry in objects),
                events_duplicate=sum(entry.events_duplicate for entry in objects),
            )
            moves: list[tuple[Path, Path]] = []
            for day, path, rows in staged:
                if rows == 0:
                    continue
                target = partition_dir(self.lake, day) / path.name
                moves.append((path, target))
                record.files.append(FileEntry(target.relative_to(self.lake).as_posix(), rows))
            if moves:
                index_target = ids_dir(self.lake) / f"{self.batch_id}.parquet"
                moves.append((id_index, index_target))
                record.id_index = index_target.relative_to(self.lake).as_posix()
            rollup_moves, record.rollups = rollups.moves(self.lake, staged_rollups)
            publish(self.lake, record, moves, checkpoint, rollup_moves)
        remove_staging(self.staging)
        pa.default_memory_pool().release_unused()
        return record

    def _stage_rollups(self, staged: list[tuple[dt.date, Path, int]]) -> list[tuple[dt.date, Path, int]]:
        """The hourly rollups of the staged rows, one file per day (replacing any staged before)."""
        folder = self.staging / "rollups"
        shutil.rmtree(folder, ignore_errors=True)
        return rollups.stage([path for _, path, rows in staged if rows], folder, self.batch_id)

    def _drop_committed(self, staged: list[tuple[dt.date, Path, int]], id_index: Path, ids: pa.Array) -> None:
        """Remove rows whose event_id another batch committed meanwhile (rare: a re-delivered event)."""
        clash = committed_duplicates(self.lake, ids)
        if not clash:
            return
        clash_ids = pa.array(sorted(clash), type=pa.string())
        for position, (day, path, rows) in enumerate(staged):
            ids_in_file = pq.read_table(path, columns=["event_id"]).column(0)
            if not pc.any(pc.is_in(ids_in_file, value_set=clash_ids)).as_py():
                continue
            rewritten = path.with_name(f"{path.stem}.dedup.parquet")
            kept_rows = 0
            with parquet_writer(rewritten) as writer:  # row group by row group: memory stays bounded
                for group in range(pq.ParquetFile(path).num_row_groups):
                    table = pq.ParquetFile(path).read_row_group(group)
                    hit = pc.is_in(table.column("event_id"), value_set=clash_ids)
                    for source in table.filter(hit).column("source_object").to_pylist():
                        entry = self._objects[source]
                        entry.events_kept -= 1
                        entry.events_duplicate += 1
                    kept = table.filter(pc.invert(hit))
                    writer.write_table(kept, row_group_size=ROW_GROUP_ROWS)
                    kept_rows += kept.num_rows
            os.replace(rewritten, path)
            staged[position] = (day, path, kept_rows)
            self._rows -= rows - kept_rows
        write_id_index(id_index, [path for _, path, rows in staged if rows])
