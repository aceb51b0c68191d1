"""CloudTrail objects -> records -> KMS/Secrets Manager events -> the lake; quarantine; IngestReport.

Each object is read once (`ingest_workers`: fetched, gunzipped, normalized, turned into Arrow batches, in
worker processes when `workers > 1`). The run takes the results in listing order, so the first copy of a
duplicated eventID (in listing order) is the one kept whatever the timing: a crashed run that is rerun ends
with exactly the rows of a clean run. The lake's `BatchWriter` records each object's result in its ledger
entry; the report sums the entries of the batches the run committed.

Bad input never stops a run and never vanishes: a bad object (corrupt gzip, not JSON, no `Records`, empty, a
symlink out of the trail, ...) is kept under `quarantine/objects/` with its reason; bad records (wrong field
types, invalid UTF-8, nested too deep, ...) under `quarantine/records/`; both are counted in the report and in
the ledger, so a rerun skips them. A fault of the run (the lake cannot be written, the source cannot be read)
raises `RunFault` with one line saying what to do. `ingest_failures` defines which is which.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import lake, safe_text
from pipeline.events import DEFAULT_SOURCES
from pipeline.ingest_failures import reading_source, writing_lake
from pipeline.ingest_workers import ObjectResult, TaskResult, few_collections, run_tasks
from pipeline.s3 import LogObject, list_source

log = logging.getLogger(__name__)

# A batch is committed once it holds this many events (bounds the in-memory eventID set, ~130 B per event, and
# the work a crash can cost); a run writes one file per partition per batch.
MAX_BATCH_EVENTS = 500_000

# (objects done, objects to read, bytes done, bytes to read)
Progress = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class QuarantineEntry:
    source: str
    reason: str
    path: str  # where it is kept, inside the lake


@dataclass
class IngestReport:
    """What a run did. `events_per_second` counts every record read (the work done), not only kept events."""

    objects_listed: int = 0
    objects_read: int = 0
    objects_skipped: int = 0  # already in the ledger
    objects_skipped_digest: int = 0  # CloudTrail-Digest / CloudTrail-Insight, skipped on purpose
    objects_quarantined: int = 0
    bytes_read: int = 0
    events_seen: int = 0
    events_kept: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    seconds: float = 0.0
    batches: list[str] = field(default_factory=list)
    files_written: int = 0
    quarantine: list[QuarantineEntry] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def quarantined_anything(self) -> bool:
        return bool(self.objects_quarantined or self.events_rejected)

    def add_batch(self, record: lake.BatchRecord) -> None:
        """Count a batch the run committed: its objects' ledger entries hold the per-object counts."""
        for entry in record.objects:
            if entry.quarantined:
                self.objects_quarantined += 1
            else:
                self.objects_read += 1
            self.events_seen += entry.events_seen
            self.events_kept += entry.events_kept
            self.events_duplicate += entry.events_duplicate
            self.events_rejected += entry.events_rejected
        self.batches.append(record.batch_id)
        self.files_written += len(record.files)

    def merge(self, other: IngestReport) -> IngestReport:
        """The sum of two reports (e.g. the per-day-chunk reports of a mapped flow)."""
        merged = IngestReport()
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(merged, name, mine + theirs)
        return merged


# --- the run ------------------------------------------------------------------------------------------------


class _Run:
    """One ingest run's state: the open batch (its writer keeps the ledger entries of the objects), the staging
    folder the run's tasks write their parts in, and the report."""

    def __init__(self, lake_path: Path, now: dt.datetime | None, checkpoint: lake.Checkpoint | None) -> None:
        self.lake = lake_path
        self.now = now
        self.checkpoint = checkpoint
        self.report = IngestReport()
        self.writer: lake.BatchWriter | None = None
        self.name = lake.new_batch_id(now)  # names the run's staging folder and its part files
        with lake.lake_lock(lake_path):  # held while the run lives: `recover` leaves its parts alone
            self.staging, self._staging_lock = lake.claim_staging(lake_path, self.name)

    def _open(self) -> lake.BatchWriter:
        if self.writer is None:
            self.writer = lake.BatchWriter(self.lake, self.now).__enter__()
        return self.writer

    def consume_task(self, task: TaskResult) -> Iterator[ObjectResult]:
        """Account for a task's objects in order, yielding after each one. Each segment is adopted when its
        first object comes up, and a full lake batch commits only between segments, once every object whose
        rows it holds is recorded."""
        start = 0
        for segment, end in zip(task.segments, task.ends, strict=True):
            with writing_lake(self.lake):
                self._open().adopt(
                    segment, [(result.obj, result.rows, result.duplicates) for result in task.objects[start:end]]
                )
            for result in task.objects[start:end]:
                with writing_lake(self.lake):
                    self.consume(result)
                yield result
            start = end
            if self.writer is not None and self.writer.rows >= MAX_BATCH_EVENTS:
                self.commit()

    def consume(self, result: ObjectResult) -> None:
        writer = self._open()
        source = result.obj.source
        self.report.bytes_read += result.obj.size
        if result.error is not None:
            kept_at = writer.record_unreadable(result.obj, result.error, result.payload)
            self.report.quarantine.append(QuarantineEntry(source, result.error, self._rel(kept_at)))
            log.warning("quarantined %s: %s", safe_text.visible(source), safe_text.visible(result.error))
            return
        kept_at = writer.record_read(result.obj, result.seen, result.rejected)
        if kept_at is not None:
            reason = f"{len(result.rejected)} record(s) rejected; first: {result.rejected[0].reason}"
            self.report.quarantine.append(QuarantineEntry(source, reason, self._rel(kept_at)))
            log.warning("%s: %s", safe_text.visible(source), safe_text.visible(reason))

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.lake).as_posix()

    def commit(self) -> None:
        writer = self.writer
        if writer is None or writer.empty:
            return
        try:
            with writing_lake(self.lake):
                record = writer.commit(self.checkpoint)
        finally:
            writer.__exit__(None, None, None)
            self.writer = None
        self.report.add_batch(record)

    def close(self, finished: bool) -> None:
        if self.writer is not None:
            self.writer.__exit__(None, None, None)  # staging is left for `recover`: this run failed
            self.writer = None
        if finished:
            lake.remove_staging(self.staging)
        self._staging_lock.close()


def ingest_objects(
    objects: Iterable[LogObject],
    lake_path: Path | str,
    *,
    event_sources: Sequence[str] = DEFAULT_SOURCES,
    s3_client: Any | None = None,
    lake_client: Any | None = None,
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
    checkpoint: lake.Checkpoint | None = None,
) -> IngestReport:
    """Ingest the given objects (e.g. one day chunk a flow mapped over) into the lake.

    Objects already in the ledger and digest/insight objects are skipped and counted. Safe to run
    concurrently for different chunks of the same lake, from any number of machines when the lake is on S3
    (`lake_path` s3://bucket/prefix: `lake_client`, default `s3_client`, reaches it; `cache_dir` holds this
    machine's replica, see `lake.remote`). `now` is recorded in the ledger; `checkpoint` is
    called with 'object:<n>' after each object and 'files-published' just before the commit point (tests
    raise from it to simulate a crash).
    """
    started = time.perf_counter()
    with writing_lake(Path(str(lake_path))):  # an S3 lake: this machine's replica of it, synced with its log
        lake_path = lake.resolve(lake_path, lake_client if lake_client is not None else s3_client, cache_dir)
    listed = list(objects)
    with writing_lake(lake_path):
        lake.recover(lake_path)
        done = lake.ingested_objects(lake_path)
        run = _Run(lake_path, now, checkpoint)
    report = run.report
    report.objects_listed = len(listed)
    to_read: list[LogObject] = []
    for obj in listed:
        if obj.skipped:
            report.objects_skipped_digest += 1
        elif (obj.bucket, obj.key, obj.etag) in done:
            report.objects_skipped += 1
        else:
            to_read.append(obj)
    total_bytes = sum(obj.size for obj in to_read)
    if progress is not None:
        progress(0, len(to_read), 0, total_bytes)
    with few_collections():
        finished = False
        try:
            count = 0
            tasks = run_tasks(to_read, s3_client, event_sources, workers, MAX_BATCH_EVENTS, run.staging, run.name)
            for task in tasks:
                for _ in run.consume_task(task):
                    count += 1
                    if progress is not None:
                        progress(count, len(to_read), report.bytes_read, total_bytes)
                    if checkpoint is not None:
                        checkpoint(f"object:{count}")
            run.commit()
            finished = True
        finally:
            run.close(finished)
    report.seconds = time.perf_counter() - started
    log.info(
        "ingested %d objects (%d skipped, %d quarantined): %d events seen, %d kept, %d duplicates in %.2fs",
        report.objects_read,
        report.objects_skipped,
        report.objects_quarantined,
        report.events_seen,
        report.events_kept,
        report.events_duplicate,
        report.seconds,
    )
    return report


def ingest(
    source: str,
    lake_path: Path | str,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    accounts: Sequence[str] = (),
    regions: Sequence[str] = (),
    event_sources: Sequence[str] = DEFAULT_SOURCES,
    s3_client: Any | None = None,
    lake_client: Any | None = None,
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
    checkpoint: lake.Checkpoint | None = None,
) -> IngestReport:
    """List `source` (s3://bucket[/prefix] or a folder) within the range and ingest what is new."""
    started = time.perf_counter()
    with reading_source(source):
        objects = list_source(source, s3_client, since, until, accounts, regions)
    report = ingest_objects(
        objects,
        lake_path,
        event_sources=event_sources,
        s3_client=s3_client,
        lake_client=lake_client,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        now=now,
        checkpoint=checkpoint,
    )
    report.seconds = time.perf_counter() - started
    return report
