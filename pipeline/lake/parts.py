"""Segments: the rows of consecutive source objects written as per-day Parquet parts by one process.

An ingest worker writes its own parts (Parquet encoding is most of a run's cost past parsing: it must run where
the rows are made, not in one parent) and hands back a `Segment`: where the parts are, the (event_id,
event_date) of their rows and their fingerprints (and their hourly rollup, when the writer computed it). The
parent only orders segments, checks their event_ids against the rest of the batch and the lake, and commits
(`BatchWriter.adopt`). The first copy of an event_id wins: within a segment here, across segments in the order
the parent adopts them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.lake.files import ROW_GROUP_ROWS, PartitionFile
from pipeline.lake.ids import ID_SCHEMA
from pipeline.lake.layout import partition_name

# Rows buffered in memory across all partitions of a segment before the largest buffer is written out early
# (one row group: ~80 MB of Arrow for CloudTrail rows; this is most of the memory a writer needs).
MAX_BUFFERED_ROWS = 65_536


class Part(NamedTuple):
    day: dt.date
    path: Path
    rows: int


@dataclass
class Segment:
    parts: list[Part]
    ids: pa.Table  # ID_SCHEMA: (event_id, event_date) of the parts' rows, in the order they were added
    prints: np.ndarray | None  # the ids' fingerprints (`ids.fingerprints`; None: not computed)
    rollup: pa.Table | None  # the hourly rollup of the parts' rows (None: not computed)

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)


def first_copies(ids: list[str], seen: set[str]) -> list[bool] | None:
    """Which of `ids` are first copies (not in `seen`, not earlier in `ids`); adds them to `seen`. None when all
    are (the usual case, checked in C)."""
    fresh = set(ids)
    if len(fresh) == len(ids) and seen.isdisjoint(fresh):
        seen |= fresh
        return None
    keep = []
    for event_id in ids:
        if event_id in seen:
            keep.append(False)
        else:
            seen.add(event_id)
            keep.append(True)
    return keep


class SegmentWriter:
    """Writes normalized rows as per-day part files `<folder>/event_date=D/<name>-NNN.parquet`, keeping the first
    copy of each event_id (against `seen`, shared when given: a batch's own rows use the batch's set)."""

    def __init__(self, folder: Path, name: str, seen: set[str] | None = None) -> None:
        self.folder = folder
        self.name = name
        self.seen: set[str] = set() if seen is None else seen
        self._partitions: dict[dt.date, PartitionFile] = {}
        self._ids: list[pa.RecordBatch] = []
        self._buffered = 0
        self.rows = 0

    def add(self, batch: pa.RecordBatch, runs: Sequence[int]) -> list[tuple[int, int]]:
        """Add rows made of consecutive runs (one per source object, empty ones allowed). Returns (kept,
        duplicates) per run."""
        named = sum(runs)
        if named != batch.num_rows:
            raise ValueError(f"the runs name {named} rows but the batch has {batch.num_rows}")
        keep = first_copies(batch.column(0).to_pylist(), self.seen)
        counts, start = [], 0
        for size in runs:
            kept = size if keep is None else sum(keep[start : start + size])
            counts.append((kept, size - kept))
            start += size
        if keep is not None and not all(keep):
            batch = batch.filter(pa.array(keep, type=pa.bool_()))
        if batch.num_rows:
            self._write(batch)
        return counts

    def _write(self, batch: pa.RecordBatch) -> None:
        self._ids.append(batch.select(["event_id", "event_date"]))
        self.rows += batch.num_rows
        dates = batch.column("event_date")
        low, high = pc.min_max(dates).values()
        if low == high:
            groups = [(low.as_py(), batch)]
        else:
            groups = [(day.as_py(), batch.filter(pc.equal(dates, day))) for day in pc.unique(dates)]
        for day, part in groups:
            target = self._partitions.get(day)
            if target is None:
                target = self._partitions[day] = PartitionFile(self.folder / partition_name(day), self.name)
            target.add(part)
            self._buffered += part.num_rows
            if target.buffered >= ROW_GROUP_ROWS:
                self._buffered -= target.buffered
                target.flush()
        while self._buffered > MAX_BUFFERED_ROWS:  # bounded memory: write the largest buffer early
            largest = max(self._partitions.values(), key=lambda p: p.buffered)
            self._buffered -= largest.buffered
            largest.flush()

    def finish(self) -> tuple[list[Part], pa.Table]:
        """Close the files: every part written (by day) and the ids of their rows. Calling it again (after more
        rows or none) gives all parts so far."""
        parts = []
        for day, partition in sorted(self._partitions.items()):
            partition.close()
            parts.extend(Part(day, path, rows) for path, rows in zip(partition.paths, partition.rows, strict=True))
        self._buffered = 0
        ids = pa.Table.from_batches(self._ids).cast(ID_SCHEMA) if self._ids else ID_SCHEMA.empty_table()
        return parts, ids

    def abort(self) -> None:
        """Close open files, leaving buffers unwritten (a failed writer; its staging is `recover`'s job)."""
        for partition in self._partitions.values():
            partition.close_file()
