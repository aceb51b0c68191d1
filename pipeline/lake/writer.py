"""Writing one batch: staged partition files, event_id de-duplication, and the ledger entry of every source object.

The writer is the one place that accounts for source objects: which rows each contributed, how many of them were
kept or duplicates (also after the commit drops rows another batch committed meanwhile), how many records it
held and how many were rejected, or why it could not be read. The ledger record's totals, and an ingest run's,
are sums of those entries.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.events import RejectedRecord
from pipeline.lake import rollups
from pipeline.lake.files import ROW_GROUP_ROWS, parquet_writer
from pipeline.lake.ids import committed_duplicates, fingerprints, merge_runs, read_index, stage_index
from pipeline.lake.layout import partition_dir, staging_dir
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
from pipeline.lake.parts import Part, Segment, SegmentWriter
from pipeline.lake.quarantine import quarantine_object, quarantine_records
from pipeline.lake.remote import RemoteLake, attached
from pipeline.times import iso

log = logging.getLogger(__name__)


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
    """Collects events for one batch: de-duplicates event_ids, stages partition files (its own, or segments
    ingest workers wrote: `adopt`), records each source object's ledger entry, commits atomically.

    Use as a context manager (it holds the staging lock that tells `recover` this writer is alive). Safe to run
    concurrently with other writers on the same lake; their commits are serialized by the lake lock.
    """

    def __init__(self, lake: Path, now: dt.datetime | None = None, remote: RemoteLake | None = None) -> None:
        self.lake = Path(lake)
        self.now = now
        self.remote = remote if remote is not None else attached(self.lake)  # an S3 lake's replica commits there
        self.batch_id = new_batch_id(now)
        self.staging = staging_dir(self.lake) / self.batch_id
        self._seen: set[str] = set()  # every event_id of the batch so far
        self._own = SegmentWriter(self.staging, self.batch_id, self._seen)  # rows given to `add`
        self._segments: list[Segment] = []  # adopted, in order
        self._rewritten = False  # rows were dropped from adopted parts: ids and rollups come from the files
        self._lock_handle: IO[bytes] | None = None
        self._objects: dict[str, ObjectEntry] = {}  # source -> ledger entry, in the order the objects came
        self._rows = 0

    def __enter__(self) -> BatchWriter:
        with lake_lock(self.lake):
            self.staging, self._lock_handle = claim_staging(self.lake, self.batch_id)  # held until __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        self._own.abort()
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
        counts = self._own.add(batch, [rows for _, rows in objects])
        for (obj, _), (kept, duplicates) in zip(objects, counts, strict=True):
            entry = self._entry(obj)
            entry.events_kept += kept
            entry.events_duplicate += duplicates
        kept = sum(kept for kept, _ in counts)
        self._rows += kept
        return kept, batch.num_rows - kept

    def adopt(self, segment: Segment, objects: Sequence[tuple[SourceObject, int, int]]) -> int:
        """Take over a segment an ingest worker wrote (its parts are moved into the lake at commit) with the
        (object, kept rows, duplicate rows) of the objects whose rows it holds, in order. Rows whose event_id came
        earlier in this batch are dropped (the parts rewritten) and counted as their objects' duplicates. Returns
        the rows kept."""
        for obj, kept, duplicates in objects:
            entry = self._entry(obj)
            entry.events_kept += kept
            entry.events_duplicate += duplicates
        ids = segment.ids.column("event_id").to_pylist()
        if self._seen.isdisjoint(ids):
            self._seen.update(ids)
        else:  # rare: an event re-delivered in another object of the batch
            clash = self._seen.intersection(ids)
            self._seen.update(ids)
            segment.parts[:] = self._drop_ids(segment.parts, clash)
            segment.rollup = None
            self._rewritten = True
        self._segments.append(segment)
        self._rows += segment.rows
        return segment.rows

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

    def _staged(self) -> tuple[list[Part], pa.Table, np.ndarray | None, list[pa.Table] | None]:
        """Every staged part, their ids and the ids' fingerprints (None: compute them), and the hourly rollups of
        their rows in pieces (None: compute them from the files)."""
        own_parts, own_ids = self._own.finish()
        parts = own_parts + [part for segment in self._segments for part in segment.parts]
        if self._rewritten:
            return parts, read_index(path for _, path, rows in parts if rows), None, None
        ids = pa.concat_tables([own_ids, *(segment.ids for segment in self._segments)])
        prints: np.ndarray | None = None
        if all(segment.prints is not None for segment in self._segments):
            prints = np.concatenate([fingerprints(own_ids.column(0)), *(s.prints for s in self._segments)])
        pieces: list[pa.Table] | None = [segment.rollup for segment in self._segments if segment.rollup is not None]
        if len(pieces) < len(self._segments):
            pieces = None
        elif own_parts:
            pieces.append(rollups.hourly([path for _, path, rows in own_parts if rows]))
        return parts, ids, prints, pieces

    def commit(self, checkpoint: Checkpoint | None = None) -> BatchRecord:
        """Publish the batch atomically with the ledger entries of the objects it consumed. Rows whose event_id
        another batch committed meanwhile are dropped and counted as their objects' duplicates."""
        staged, ids, prints, pieces = self._staged()
        self._seen = set()  # free the memory before probing the committed id index
        self._segments = []
        # Hand the written buffers back to the OS: the id probe below allocates from other threads, which
        # the Arrow pool would not reuse them for (+120 MB resident per commit otherwise).
        pa.default_memory_pool().release_unused()
        if staged and prints is None:
            prints = fingerprints(ids.column(0))
        staged_rollups = self._stage_rollups(staged, pieces)  # outside the lock; redone below if rows were dropped
        with lake_lock(self.lake):
            recover_locked(self.lake)
            while True:
                if self.remote is not None:
                    self.remote.sync()  # what other machines committed: the id check must see it
                if staged:
                    clash = committed_duplicates(self.lake, ids.column(0).combine_chunks(), prints)
                    if clash:  # rollups count committed rows only
                        staged = self._drop_ids(staged, clash)
                        ids, prints = read_index(path for _, path, rows in staged if rows), None
                        staged_rollups = self._stage_rollups(staged, None)
                record, moves, rollup_moves = self._record(staged, ids, prints, staged_rollups)
                if self.remote is None:
                    publish(self.lake, record, moves, checkpoint, rollup_moves)
                    break
                if self._publish_remote(record, moves + rollup_moves, checkpoint):
                    publish(self.lake, record, moves, None, rollup_moves)
                    self.remote.committed(record)
                    break
                log.info("batch %s: another writer committed first; checking again", self.batch_id)
            merge_runs(self.lake)
        remove_staging(self.staging)
        pa.default_memory_pool().release_unused()
        return record

    def _record(
        self, staged: list[Part], ids: pa.Table, prints: np.ndarray | None, staged_rollups: list[Part]
    ) -> tuple[BatchRecord, list[tuple[Path, Path]], list[tuple[Path, Path]]]:
        """The ledger record of the batch as staged, and the renames that publish it (events + index, rollups)."""
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
            index_moves = stage_index(self.staging, self.lake, self.batch_id, ids, prints)
            record.index = [target.relative_to(self.lake).as_posix() for _, target in index_moves]
            moves += index_moves
        rollup_moves, record.rollups = rollups.moves(self.lake, staged_rollups)
        return record, moves, rollup_moves

    def _publish_remote(
        self, record: BatchRecord, moves: list[tuple[Path, Path]], checkpoint: Checkpoint | None
    ) -> bool:
        """Upload the staged files under their final keys, then create the next log entry (the commit point on
        S3). False when another writer took that entry first."""
        assert self.remote is not None
        etags = {}
        for source, target in moves:
            rel = target.relative_to(self.lake).as_posix()
            etags[rel] = self.remote.upload(source, rel)
        for entry in record.published:
            entry.etag = etags.get(entry.path)
        if checkpoint is not None:
            checkpoint("files-published")  # tests inject a crash here: files uploaded, no log entry
        return self.remote.try_commit(record)

    def _stage_rollups(self, staged: list[Part], pieces: list[pa.Table] | None) -> list[Part]:
        """The hourly rollups of the staged rows, one file per day (replacing any staged before): merged from
        the pieces computed where the parts were written, or (None) computed from the files."""
        folder = self.staging / "rollups"
        shutil.rmtree(folder, ignore_errors=True)
        if pieces is None:
            return rollups.stage([path for _, path, rows in staged if rows], folder, self.batch_id)
        return rollups.stage_merged(pieces, folder, self.batch_id)

    def _drop_ids(self, staged: list[Part], clash: set[str]) -> list[Part]:
        """The parts without the rows whose event_id is in `clash` (files rewritten, row group by row group:
        memory stays bounded), each dropped row counted as its object's duplicate (rare: a re-delivered event)."""
        clash_ids = pa.array(sorted(clash), type=pa.string())
        kept_parts = []
        for day, path, rows in staged:
            ids_in_file = pq.read_table(path, columns=["event_id"]).column(0) if rows else None
            if ids_in_file is None or not pc.any(pc.is_in(ids_in_file, value_set=clash_ids)).as_py():
                kept_parts.append(Part(day, path, rows))
                continue
            rewritten = path.with_name(f"{path.stem}.dedup.parquet")
            kept_rows = 0
            with parquet_writer(rewritten) as writer:
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
            kept_parts.append(Part(day, path, kept_rows))
            self._rows -= rows - kept_rows
        return kept_parts
