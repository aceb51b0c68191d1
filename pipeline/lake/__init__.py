"""The Parquet lake: partition paths, atomic idempotent batches, the ledger, hourly rollups, quarantine, compaction.

Layout under `<lake>/`:

    events/event_date=YYYY-MM-DD/<batch>-NNN.parquet   committed events (EVENTS_SCHEMA, zstd, 64k-row groups)
    rollups/hourly-v2/event_date=YYYY-MM-DD/<batch>.parquet  hourly rollups of the batch's events of that day
    quarantine/objects/<name> + <name>.reason.json     bad source objects, verbatim (when read), with the reason
    quarantine/records/<name>.jsonl                     rejected records of readable objects, one per line
                                                        (<name>: a digest + a sanitised part of the key, <= 120
                                                        bytes; the full source and key are in the reason / lines)
    _ledger/batches/<batch>.json                        one record per committed batch: the commit point
    _ledger/ids/event_date=D/<batch>.parquet            the event_ids a batch added on day D (exact check)
    _ledger/fingerprints/<tier>-<batch>.npy             sorted fingerprints of committed ids (see `ids`)
    _staging/<run>/t<task>/...                          an ingest run's parts, written by its workers (`parts`)
    _ledger/intents/<batch>.json                        a commit in progress (only while one is running)
    _ledger/lock                                        flock: commits, compactions and recovery run one at a time
    _staging/<batch>/...  + <batch>.lock                a writer's files before commit (held flock = alive)

Commit protocol: stage the events and their hourly rollups; then, under the lake lock: recover, drop event_ids
already committed (and recompute the rollups if rows were dropped: they count committed rows only), write the
intent (it names the event and the rollup files), rename the staged files into `events/` then `rollups/`, write
the ledger record (the commit point), delete the intent. A crash before the ledger record leaves an intent that
the next writer's `recover` rolls back (renamed files deleted); after it, `recover` only finishes the cleanup.
`committed_files` / `committed_rollup_files` hide the files of unfinished intents, so the engine never sees half
a batch, nor events without their rollups; plain globs over `events/**/*.parquet` see only committed data once
`recover` ran. Compaction and `rollups.rebuild` replace a
day's rollup files through the same protocol (`superseded`), so a day's rollups always equal its events'.

`event_id` is unique across the whole lake, not just per partition (see `ids`).

Modules: `layout` (paths, partitions), `ledger` (records, lock, commit protocol, recovery, what readers see),
`ids` (the lake-wide event_id index), `parts` (segments: parts written by ingest workers), `writer` (one batch:
partition files, adopted segments and per-object accounting),
`rollups` (compute, stage, read, rebuild), `quarantine`, `compaction`.
"""

from pipeline.lake.compaction import CompactReport, compact
from pipeline.lake.ids import committed_duplicates
from pipeline.lake.layout import events_dir, partition_dir, partitions, quarantine_dir, rollups_dir
from pipeline.lake.ledger import (
    BatchRecord,
    Checkpoint,
    FileEntry,
    ObjectEntry,
    claim_staging,
    committed_files,
    committed_rollup_files,
    ingested_objects,
    lake_lock,
    new_batch_id,
    read_ledger,
    recover,
    remove_staging,
)
from pipeline.lake.parts import Part, Segment, SegmentWriter
from pipeline.lake.quarantine import quarantine_object, quarantine_records
from pipeline.lake.remote import is_remote, lake_dir, normalize_url, open_remote, resolve
from pipeline.lake.writer import BatchWriter, SourceObject

__all__ = [
    "BatchRecord",
    "BatchWriter",
    "Checkpoint",
    "CompactReport",
    "FileEntry",
    "ObjectEntry",
    "Part",
    "Segment",
    "SegmentWriter",
    "SourceObject",
    "claim_staging",
    "committed_duplicates",
    "committed_files",
    "committed_rollup_files",
    "compact",
    "events_dir",
    "ingested_objects",
    "is_remote",
    "lake_dir",
    "lake_lock",
    "new_batch_id",
    "normalize_url",
    "open_remote",
    "partition_dir",
    "partitions",
    "quarantine_dir",
    "quarantine_object",
    "quarantine_records",
    "read_ledger",
    "recover",
    "remove_staging",
    "resolve",
    "rollups_dir",
]
