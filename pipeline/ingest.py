"""CloudTrail objects -> records -> KMS/Secrets Manager events -> the lake; quarantine; IngestReport.

Each object is read once: fetched, gunzipped (isal), split and normalized by `events.rows_from_log`, turned
into Arrow batches column-wise, a group of consecutive objects at a time. With `workers > 1` that work runs in
`workers - 1` processes over a bounded queue of groups, and in the parent whenever the next result is not
ready; the parent alone writes the lake, taking results in listing order so the first
copy of a duplicated eventID (in listing order) is the one kept, whatever the timing: a crashed run that is
rerun ends with exactly the rows of a clean run.

Bad input never stops a run and never vanishes: an unreadable object (corrupt gzip, not JSON, no `Records`,
empty) is kept verbatim under `quarantine/objects/` with its reason; records with wrong field types are kept
under `quarantine/records/`; both are counted in the report and in the ledger, so a rerun skips them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import logging
import multiprocessing
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import events, lake
from pipeline.events import DEFAULT_SOURCES, LogFormatError, RejectedRecord
from pipeline.s3 import LogObject, fetch, list_source

try:  # isal is ~2x faster than zlib at gunzip; fall back when it is absent
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - isal is a declared dependency
    import gzip as _gzip  # type: ignore[no-redef]

log = logging.getLogger(__name__)

# A batch is committed once it holds this many events (bounds the in-memory eventID set, ~130 B per event, and
# the work a crash can cost); a run writes one file per partition per batch.
MAX_BATCH_EVENTS = 500_000
_ARROW_CHUNK = 1024  # rows per Arrow build: column-wise, never row by row; small enough to convert while cached
_IN_FLIGHT_PER_WORKER = 2  # one group being read, one waiting: enough to keep workers busy, half the memory
# Objects are read in groups of about this much stored data (or this many objects): ~5 MB of JSON, ~7 MB of
# Arrow sent back from a worker (smaller groups cost the same CPU and ~40 MB less memory in flight).
_GROUP_BYTES = 1 << 19
_GROUP_OBJECTS = 512
_INGEST_GC_THRESHOLDS = (100_000, 50, 100)
# Starting a worker process costs ~0.5 s: below this much input per worker, fewer workers (or none) are faster.
MIN_BYTES_PER_WORKER = 4 << 20

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

    def merge(self, other: IngestReport) -> IngestReport:
        """The sum of two reports (e.g. the per-day-chunk reports of a mapped flow)."""
        merged = IngestReport()
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(merged, name, mine + theirs)
        return merged


# --- reading one object (runs in a worker process when workers > 1) ----------------------------------------


@dataclass
class ObjectResult:
    obj: LogObject
    seen: int
    rejected: list[RejectedRecord]
    rows: int = 0  # normalized rows this object contributed to its group's batches (consecutive, in order)
    error: str | None = None  # why the object as a whole is unreadable
    payload: bytes | None = None  # the stored bytes, kept only for the quarantine


@dataclass
class GroupResult:
    """Consecutive objects read together: real trails are mostly small files (tens of records), and one
    Arrow build, one pickle and one lake add per object would cost more than reading them."""

    objects: list[ObjectResult]
    batches: list[pa.RecordBatch]  # every batch holds whole objects' rows, in object order


def decompress(data: bytes, key: str) -> bytes:
    """Gunzip when the bytes are gzip; plain JSON passes through. Raises LogFormatError on corrupt gzip."""
    if not data:
        raise LogFormatError("empty object")
    if data[:2] == b"\x1f\x8b":
        try:
            return _gzip.decompress(data)
        except Exception as exc:  # isal raises IsalError/EOFError/BadGzipFile; all mean "corrupt"
            raise LogFormatError(f"corrupt gzip: {type(exc).__name__}: {exc}") from None
    if key.endswith(".gz"):
        raise LogFormatError("corrupt gzip: the name ends in .gz but the bytes are not gzip")
    return data


def read_object(
    obj: LogObject, client: Any | None, event_sources: Sequence[str]
) -> tuple[ObjectResult, list[tuple[Any, ...]]]:
    """Fetch and normalize one object: its result and its rows. Unreadable content -> a result with `error`;
    I/O errors raise."""
    fetched = fetch(obj, client)
    stored = fetched.data
    try:
        # When it was written bounds its eventTimes: a record from the far future is rejected, not kept.
        parsed = events.rows_from_log(decompress(stored, obj.key), obj.source, event_sources, fetched.written)
    except LogFormatError as exc:
        return ObjectResult(obj, 0, [], error=str(exc), payload=stored), []
    return ObjectResult(obj, parsed.seen, parsed.rejected, rows=len(parsed.rows)), parsed.rows


def read_group(objects: Sequence[LogObject], client: Any | None, event_sources: Sequence[str]) -> GroupResult:
    """Read consecutive objects; their rows become Arrow batches of about _ARROW_CHUNK rows, cut only between
    objects so each batch maps to whole objects (and a lake batch can commit between any two)."""
    results: list[ObjectResult] = []
    batches: list[pa.RecordBatch] = []
    pending: list[tuple[Any, ...]] = []
    chunk = min(_ARROW_CHUNK, MAX_BATCH_EVENTS)  # a batch never holds more than a commit's worth
    for obj in objects:
        result, rows = read_object(obj, client, event_sources)
        results.append(result)
        pending.extend(rows)
        if len(pending) >= chunk:
            batches.append(events.rows_to_batch(pending))
            pending = []
    if pending:
        batches.append(events.rows_to_batch(pending))
    return GroupResult(results, batches)


def _groups(objects: Sequence[LogObject]) -> Iterator[Sequence[LogObject]]:
    """Consecutive runs of objects of about _GROUP_BYTES (stored size) each."""
    start, size = 0, 0
    for index, obj in enumerate(objects):
        size += obj.size
        if size >= _GROUP_BYTES or index + 1 - start >= _GROUP_OBJECTS:
            yield objects[start : index + 1]
            start, size = index + 1, 0
    if start < len(objects):
        yield objects[start:]


_worker_client: Any = None


def _init_worker(endpoint_url: str | None, region: str | None, needs_s3: bool) -> None:
    global _worker_client
    gc.set_threshold(*_INGEST_GC_THRESHOLDS)  # this process only ingests: see _few_collections
    # Its Arrow data is built, pickled to the parent and dropped: mimalloc's caching would keep ~35 MB more
    # resident per worker than the system allocator, for no measurable speed.
    pa.set_memory_pool(pa.system_memory_pool())
    if needs_s3:  # a process cannot share its parent's client: make one the same way
        from pipeline import aws  # here: boto3 costs a worker reading a folder ~0.3 s of start-up

        _worker_client = aws.client("s3", endpoint_url=endpoint_url, region=region)


def _read_in_worker(objects: Sequence[LogObject], event_sources: Sequence[str]) -> GroupResult:
    return read_group(objects, _worker_client, event_sources)


def _results(
    objects: Sequence[LogObject], client: Any | None, event_sources: Sequence[str], workers: int
) -> Iterator[GroupResult]:
    """Group results in the order of `objects`. With workers > 1, `workers - 1` processes read groups and this
    process reads one itself whenever the next result is not ready yet, so `workers` cores read and none
    waits: a third process on two cores, and every group's Arrow batches pickled across, cost ~30% more CPU
    than they saved. A bounded number of groups are in flight."""
    workers = min(workers, len(objects), sum(obj.size for obj in objects) // max(MIN_BYTES_PER_WORKER, 1))
    groups = _groups(objects)
    if workers <= 1:
        for group in groups:
            yield read_group(group, client, event_sources)
        return
    needs_s3 = any(obj.is_s3 for obj in objects)
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None) if needs_s3 else None
    region = getattr(getattr(client, "meta", None), "region_name", None) if needs_s3 else None
    sources = tuple(event_sources)
    queued = (workers - 1) * _IN_FLIGHT_PER_WORKER  # groups waiting or being read in the pool
    most = 2 * queued + workers  # results held at once (memory bound): done ones wait for their turn
    # spawn: the parent may run threads (a moto server, Prefect); forking those is unsafe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers - 1, mp_context=context, initializer=_init_worker, initargs=(endpoint, region, needs_s3)
    ) as pool:
        slots: deque[Future[GroupResult] | GroupResult] = deque()  # in group order
        with _main_script_not_rerun():  # the pool starts its processes on these first submits
            slots.extend(pool.submit(_read_in_worker, group, sources) for group in itertools.islice(groups, queued))
        while True:
            busy = sum(isinstance(slot, Future) and not slot.done() for slot in slots)
            for group in itertools.islice(groups, max(0, min(queued - busy, most - len(slots)))):
                slots.append(pool.submit(_read_in_worker, group, sources))  # keep the pool busy
            if not slots:
                return
            head = slots[0]
            if isinstance(head, Future) and not head.done() and len(slots) < most:
                group = next(groups, None)
                if group is not None:  # rather than wait, read the next group here
                    slots.append(read_group(group, client, event_sources))
                    continue
            slots.popleft()
            yield head.result() if isinstance(head, Future) else head


@contextlib.contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """Start spawned worker processes without running the caller's main script again in each of them.

    multiprocessing's spawn re-runs the parent's `__main__` file in every child unless it has none. For
    `keytrail ingest` that is the whole CLI (every command module, DuckDB, polars, matplotlib): ~2.3 s of CPU
    and ~85 MB per worker, which made 2 workers slower than 1. A worker needs only this module, which it
    imports to unpickle its task."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


_gc_lock = threading.Lock()
_gc_users = 0
_gc_before: tuple[int, ...] = gc.get_threshold()


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Run the cyclic GC less often while ingesting. Ingest makes millions of short-lived objects without cycles
    (rows, decoded records); at CPython's default thresholds the collector rescans the live ones and costs ~10%
    of the run."""
    global _gc_users, _gc_before
    # Flow tasks ingest day chunks on several threads at once: the first in saves the thresholds and the last
    # out restores them, so no interleaving leaves the process with ingest's thresholds.
    with _gc_lock:
        if _gc_users == 0:
            _gc_before = gc.get_threshold()
            gc.set_threshold(*_INGEST_GC_THRESHOLDS)
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_before)


# --- the run ------------------------------------------------------------------------------------------------


def _members(group: GroupResult) -> list[tuple[pa.RecordBatch, list[int]]]:
    """Each batch of a group with the indexes of the objects whose rows it holds."""
    with_rows = iter([index for index, result in enumerate(group.objects) if result.rows])
    plan = []
    for batch in group.batches:
        members, total = [], 0
        while total < batch.num_rows:  # batches hold whole objects, in order
            members.append(next(with_rows))
            total += group.objects[members[-1]].rows
        plan.append((batch, members))
    return plan


def _entry(obj: LogObject) -> lake.ObjectEntry:
    return lake.ObjectEntry(bucket=obj.bucket, key=obj.key, etag=obj.etag, size=obj.size)


class _Run:
    """One ingest run's state: the open batch, the ledger entries it will commit, the report."""

    def __init__(self, lake_path: Path, now: dt.datetime | None, checkpoint: lake.Checkpoint | None) -> None:
        self.lake = lake_path
        self.now = now
        self.checkpoint = checkpoint
        self.report = IngestReport()
        self.writer: lake.BatchWriter | None = None
        self.entries: dict[str, lake.ObjectEntry] = {}  # source_object -> ledger entry

    def _open(self) -> lake.BatchWriter:
        if self.writer is None:
            self.writer = lake.BatchWriter(self.lake, self.now).__enter__()
        return self.writer

    def consume_group(self, group: GroupResult) -> Iterator[ObjectResult]:
        """Account for a group's objects in order, yielding after each one. Each Arrow batch is added when its
        first object comes up, and a full lake batch commits only once every object whose rows it holds is
        in its ledger."""
        starts = {members[0]: (batch, members) for batch, members in _members(group)}
        counts: dict[int, tuple[int, int]] = {}
        unaccounted = 0  # objects whose rows were added but not yet consumed
        for index, result in enumerate(group.objects):
            if index in starts:
                batch, members = starts[index]
                sizes = [group.objects[member].rows for member in members]
                counts.update(zip(members, self._open().add_runs(batch, sizes), strict=True))
                unaccounted += len(members)
            kept, duplicates = counts.pop(index, (0, 0))
            self.consume(result, kept, duplicates)
            unaccounted -= 1 if result.rows else 0
            yield result
            if not unaccounted and self.writer is not None and self.writer.rows >= MAX_BATCH_EVENTS:
                self.commit()

    def consume(self, result: ObjectResult, kept: int = 0, duplicates: int = 0) -> None:
        entry = _entry(result.obj)
        report = self.report
        report.bytes_read += result.obj.size
        if result.error is not None:
            entry.status, entry.reason = "quarantined", result.error
            kept_at = lake.quarantine_object(self.lake, entry, result.obj.source, result.payload or b"")
            report.objects_quarantined += 1
            report.quarantine.append(QuarantineEntry(result.obj.source, result.error, self._rel(kept_at)))
            log.warning("quarantined %s: %s", result.obj.source, result.error)
        else:
            report.objects_read += 1
            self._open()
            entry.events_kept, entry.events_duplicate = kept, duplicates
            entry.events_seen = result.seen
            if result.rejected:
                entry.events_rejected = len(result.rejected)
                kept_at = lake.quarantine_records(self.lake, entry, result.obj.source, result.rejected)
                reason = f"{len(result.rejected)} record(s) rejected; first: {result.rejected[0].reason}"
                report.quarantine.append(QuarantineEntry(result.obj.source, reason, self._rel(kept_at)))
                log.warning("%s: %s", result.obj.source, reason)
            report.events_seen += result.seen
            report.events_rejected += len(result.rejected)
        self.entries[result.obj.source] = entry

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.lake).as_posix()

    def commit(self) -> None:
        if not self.entries:
            return
        writer = self._open()
        try:
            record = writer.commit(self.entries, self.checkpoint)
        finally:
            writer.__exit__(None, None, None)
            self.writer = None
        self.report.events_kept += writer.events_kept
        self.report.events_duplicate += writer.events_duplicate
        self.report.batches.append(record.batch_id)
        self.report.files_written += len(record.files)
        self.entries = {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.__exit__(None, None, None)  # staging is left for `recover`: this run failed
            self.writer = None


def ingest_objects(
    objects: Iterable[LogObject],
    lake_path: Path,
    *,
    event_sources: Sequence[str] = DEFAULT_SOURCES,
    s3_client: Any | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
    checkpoint: lake.Checkpoint | None = None,
) -> IngestReport:
    """Ingest the given objects (e.g. one day chunk a flow mapped over) into the lake.

    Objects already in the ledger and digest/insight objects are skipped and counted. Safe to run
    concurrently for different chunks of the same lake. `now` is recorded in the ledger; `checkpoint` is
    called with 'object:<n>' after each object and 'files-published' just before the commit point (tests
    raise from it to simulate a crash).
    """
    started = time.perf_counter()
    lake_path = Path(lake_path)
    listed = list(objects)
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
    with _few_collections():
        try:
            count = 0
            for group in _results(to_read, s3_client, event_sources, workers):
                for _ in run.consume_group(group):
                    count += 1
                    if progress is not None:
                        progress(count, len(to_read), report.bytes_read, total_bytes)
                    if checkpoint is not None:
                        checkpoint(f"object:{count}")
            run.commit()
        finally:
            run.close()
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
    lake_path: Path,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    accounts: Sequence[str] = (),
    regions: Sequence[str] = (),
    event_sources: Sequence[str] = DEFAULT_SOURCES,
    s3_client: Any | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
    checkpoint: lake.Checkpoint | None = None,
) -> IngestReport:
    """List `source` (s3://bucket[/prefix] or a folder) within the range and ingest what is new."""
    started = time.perf_counter()
    objects = list_source(source, s3_client, since, until, accounts, regions)
    report = ingest_objects(
        objects,
        lake_path,
        event_sources=event_sources,
        s3_client=s3_client,
        workers=workers,
        progress=progress,
        now=now,
        checkpoint=checkpoint,
    )
    report.seconds = time.perf_counter() - started
    return report
