"""Compaction: merge a partition's committed files into one file sorted by event_time, atomically, and its
hourly rollup files into one (recomputed from the merged events: same content, so the same totals)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake import rollups
from pipeline.lake.files import ROW_GROUP_ROWS, SCHEMA, parquet_writer
from pipeline.lake.layout import partition_dir
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
from pipeline.times import iso

log = logging.getLogger(__name__)


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
    refuse_replica(lake, "compaction")
    with lake_lock(lake):  # the day's events and rollups as one commit left them: they agree
        recover_locked(lake)
        before = committed_files(lake, day, day)
        rollups_before = committed_rollup_files(lake, day, day)
    if len(before) <= 1:
        rows = pq.ParquetFile(before[0]).metadata.num_rows if before else 0
        return CompactReport(day, len(before), len(before), rows, None)
    table = pa.concat_tables(pq.read_table(path, schema=SCHEMA) for path in before)
    table = table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    batch_id = new_batch_id(now)
    with lake_lock(lake):
        staging, handle = claim_staging(lake, batch_id)
    with handle:
        staged = staging / f"{batch_id}-000.parquet"
        writer = parquet_writer(staged)
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.close()
        target = partition_dir(lake, day) / staged.name
        rollup_moves, rollup_entries = rollups.moves(lake, rollups.stage(table, staging / "rollups", batch_id))
        with lake_lock(lake):
            recover_locked(lake)
            if any(not path.exists() for path in before + rollups_before):
                raise RuntimeError(f"partition {day} changed during compaction (another compact?): run it again")
            record = BatchRecord(
                batch_id=batch_id,
                kind="compact",
                committed_at=iso(now) if now is not None else None,
                files=[FileEntry(target.relative_to(lake).as_posix(), table.num_rows)],
                superseded=[path.relative_to(lake).as_posix() for path in before + rollups_before],
                rollups=rollup_entries,
            )
            publish(lake, record, [(staged, target)], checkpoint, rollup_moves)
    remove_staging(staging)
    log.info("compacted %s: %d files -> 1 (%d rows)", day, len(before), table.num_rows)
    return CompactReport(day, len(before), 1, table.num_rows, target)
