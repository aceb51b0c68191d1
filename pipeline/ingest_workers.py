"""Reading log objects into the lake's staged Parquet parts, in this process or in worker processes, and the process
tuning for it.

An object is fetched, gunzipped (isal), split and normalized by `events.rows_from_log`; its rows become Arrow
batches column-wise and are written, by the process that read them, as per-day Parquet parts with their
event-id fingerprints (`lake.parts`): a task of consecutive objects at a time. With `workers > 1`,
`workers - 1` processes run tasks over a bounded queue and this process runs one itself whenever the next
result is not ready. What comes back is small (where the parts are, their event_ids, per-object counts): the
parent only orders the results, checks event_ids, computes the batch's hourly rollups and commits. Results
come back in listing order whatever the timing, and a task keeps the first copy of an eventID among its
objects, so the run keeps the first copy in listing order.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import multiprocessing
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import events, ingest_failures
from pipeline.events import RejectedRecord
from pipeline.ingest_failures import LogFormatError
from pipeline.lake.ids import fingerprints
from pipeline.lake.parts import Segment, SegmentWriter
from pipeline.s3 import LogObject, fetch

# Most bytes one log object may inflate to (CloudTrail's own files are tens of MB at most); past it the object is
# a bad object, quarantined, not a reason to run out of memory.
MAX_LOG_BYTES = 512 << 20
# Deflate cannot expand data more than 1032:1, so an object under MAX_LOG_BYTES / 1032 stored bytes is safe to
# gunzip in one call (the common case: CloudTrail files are KBs to a few MBs compressed).
_DEFLATE_MAX_RATIO = 1032

try:  # isal is ~2x faster than zlib at gunzip; fall back when it is absent
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - isal is a declared dependency
    import gzip as _gzip  # type: ignore[no-redef]

_ARROW_CHUNK = 1024  # rows per Arrow build: column-wise, never row by row; small enough to convert while cached
_IN_FLIGHT_PER_WORKER = 2  # one task being read, one waiting: enough to keep workers busy
# Objects are read in tasks of about this much stored data (or this many objects): ~100k events, ~35k kept on a
# busy organization trail, whose parts are files of a few MB (each task writes its own). What comes back to the
# parent is ~40 bytes per kept event, so the size bounds file counts, not memory.
_TASK_BYTES = 16 << 20
_MIN_TASK_BYTES = 1 << 20
_TASK_OBJECTS = 2048
_INGEST_GC_THRESHOLDS = (100_000, 50, 100)
# Starting a worker process costs ~0.5 s: below this much input per worker, fewer workers (or none) are faster.
MIN_BYTES_PER_WORKER = 4 << 20


# --- reading a group of objects (in a worker process when workers > 1) ---------------------------------------


@dataclass
class ObjectResult:
    obj: LogObject
    seen: int
    rejected: list[RejectedRecord]
    rows: int = 0  # rows this object added to its task's parts (first copies)
    duplicates: int = 0  # rows whose eventID came earlier in the task
    error: str | None = None  # why the object as a whole is unreadable
    payload: bytes | None = None  # the stored bytes, kept only for the quarantine (None: they were not read)


@dataclass
class TaskResult:
    """Consecutive objects read and written together: real trails are mostly small files (tens of records), and
    one Arrow build and one Parquet file per object would cost more than reading them. Each segment holds the
    rows of a consecutive run of the objects (`ends[i]`: the index after segment i's last object)."""

    objects: list[ObjectResult]
    segments: list[Segment]
    ends: list[int]


def decompress(data: bytes, key: str) -> bytes:
    """Gunzip when the bytes are gzip; plain JSON passes through. Raises LogFormatError on corrupt gzip and on a
    gzip bomb (more than MAX_LOG_BYTES once inflated): one hostile object must not exhaust the run's memory."""
    if not data:
        raise LogFormatError("empty object")
    if data[:2] == b"\x1f\x8b":
        try:
            if len(data) * _DEFLATE_MAX_RATIO <= MAX_LOG_BYTES:  # cannot inflate past the cap: the fast one-shot
                return _gzip.decompress(data)
            with _gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:  # ~1.6x slower, stops at the cap
                inflated = stream.read(MAX_LOG_BYTES + 1)
        except Exception as exc:  # isal raises IsalError/EOFError/BadGzipFile; all mean "corrupt"
            raise LogFormatError(f"corrupt gzip: {type(exc).__name__}: {exc}") from None
        if len(inflated) > MAX_LOG_BYTES:
            raise LogFormatError(f"inflates to more than {MAX_LOG_BYTES >> 20} MiB (a gzip bomb?): not read further")
        return inflated
    if key.endswith(".gz"):
        raise LogFormatError("corrupt gzip: the name ends in .gz but the bytes are not gzip")
    return data


def read_object(
    obj: LogObject, client: Any | None, event_sources: Sequence[str]
) -> tuple[ObjectResult, list[tuple[Any, ...]]]:
    """Fetch and normalize one object: its result and its rows. A bad object -> a result with `error`; a fault
    of the run raises (`ingest_failures` decides which is which, here and in worker processes alike)."""
    stored: bytes | None = None
    try:
        fetched = fetch(obj, client)
        stored = fetched.data
        # When it was written bounds its eventTimes: a record from the far future is rejected, not kept.
        parsed = events.rows_from_log(decompress(stored, obj.key), obj.source, event_sources, fetched.written)
    except Exception as exc:  # object_fault re-raises whatever is not about this object
        reason = ingest_failures.object_fault(exc, obj.source)
        return ObjectResult(obj, 0, [], error=reason, payload=stored), []
    return ObjectResult(obj, parsed.seen, parsed.rejected, rows=len(parsed.rows)), parsed.rows


def read_task(
    objects: Sequence[LogObject],
    client: Any | None,
    event_sources: Sequence[str],
    max_segment_rows: int,
    folder: Path,
    name: str,
) -> TaskResult:
    """Read consecutive objects and write their rows as Parquet parts under `folder` (named after `name`), in
    segments cut between objects once one holds `max_segment_rows` rows (a lake batch can commit between any
    two). Rows become Arrow batches of about _ARROW_CHUNK rows, never row by row."""
    results: list[ObjectResult] = []
    segments: list[Segment] = []
    ends: list[int] = []
    writer = SegmentWriter(folder / "s000", f"{name}-s000")
    pending: list[tuple[Any, ...]] = []
    runs: list[int] = []  # rows of each object in `pending`, the last len(runs) objects
    chunk = min(_ARROW_CHUNK, max_segment_rows)

    def write_pending() -> None:
        if pending:
            counts = writer.add(events.rows_to_batch(pending), runs)
            for result, (kept, duplicates) in zip(results[len(results) - len(runs) :], counts, strict=True):
                result.rows, result.duplicates = kept, duplicates
            pending.clear()
        runs.clear()

    def close_segment() -> None:
        nonlocal writer
        parts, ids = writer.finish()
        # No rollup here: per-segment rollups merged at commit cost 2x one rollup of the batch's files on a
        # trail of many distinct callers and contexts (bench/README.md); the commit computes it once.
        segments.append(Segment(parts, ids, fingerprints(ids.column(0)), None))
        ends.append(len(results))
        seen, number = writer.seen, len(segments)
        writer = SegmentWriter(folder / f"s{number:03d}", f"{name}-s{number:03d}", seen)

    try:
        for obj in objects:
            result, rows = read_object(obj, client, event_sources)
            results.append(result)
            pending.extend(rows)
            runs.append(len(rows))
            if len(pending) >= chunk:
                write_pending()
            if writer.rows + len(pending) >= max_segment_rows:
                write_pending()
                close_segment()
        write_pending()
        if writer.rows or not segments or ends[-1] < len(results):
            close_segment()
    except BaseException:
        writer.abort()
        raise
    return TaskResult(results, segments, ends)


# --- scheduling ---------------------------------------------------------------------------------------------


def _tasks(objects: Sequence[LogObject], workers: int) -> Iterator[Sequence[LogObject]]:
    """Consecutive runs of objects of about _TASK_BYTES (stored size) each; smaller when the input is small, so
    every worker gets a few tasks (they finish together)."""
    most = max(_MIN_TASK_BYTES, sum(obj.size for obj in objects) // (4 * workers)) if workers > 1 else _TASK_BYTES
    start, size = 0, 0
    for index, obj in enumerate(objects):
        size += obj.size
        if size >= min(most, _TASK_BYTES) or index + 1 - start >= _TASK_OBJECTS:
            yield objects[start : index + 1]
            start, size = index + 1, 0
    if start < len(objects):
        yield objects[start:]


_worker_client: Any = None


def _init_worker(endpoint_url: str | None, region: str | None, needs_s3: bool) -> None:
    global _worker_client
    gc.set_threshold(*_INGEST_GC_THRESHOLDS)  # this process only ingests: see few_collections
    # Its Arrow data is built, pickled to the parent and dropped: mimalloc's caching would keep ~35 MB more
    # resident per worker than the system allocator, for no measurable speed.
    pa.set_memory_pool(pa.system_memory_pool())
    if needs_s3:  # a process cannot share its parent's client: make one the same way
        from pipeline import aws  # here: boto3 costs a worker reading a folder ~0.3 s of start-up

        _worker_client = aws.client("s3", endpoint_url=endpoint_url, region=region)


def _read_in_worker(
    objects: Sequence[LogObject], event_sources: Sequence[str], max_segment_rows: int, folder: Path, name: str
) -> TaskResult:
    return read_task(objects, _worker_client, event_sources, max_segment_rows, folder, name)


def run_tasks(
    objects: Sequence[LogObject],
    client: Any | None,
    event_sources: Sequence[str],
    workers: int,
    max_segment_rows: int,
    folder: Path,
    name: str,
) -> Iterator[TaskResult]:
    """Task results in the order of `objects`, their parts written under `folder` (task n: `folder/tNNNNN`,
    files named `<name>-tNNNNN-...`). With workers > 1, `workers - 1` processes run tasks and this process runs
    one itself whenever the next result is not ready yet, so `workers` cores work and none waits. A bounded
    number of tasks are in flight."""
    workers = min(workers, len(objects), sum(obj.size for obj in objects) // max(MIN_BYTES_PER_WORKER, 1))
    tasks = ((folder / f"t{n:05d}", f"{name}-t{n:05d}", task) for n, task in enumerate(_tasks(objects, workers)))
    sources = tuple(event_sources)
    if workers <= 1:
        for task_folder, task_name, task in tasks:
            yield read_task(task, client, sources, max_segment_rows, task_folder, task_name)
        return
    needs_s3 = any(obj.is_s3 for obj in objects)
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None) if needs_s3 else None
    region = getattr(getattr(client, "meta", None), "region_name", None) if needs_s3 else None
    queued = (workers - 1) * _IN_FLIGHT_PER_WORKER  # tasks waiting or running in the pool
    most = 2 * queued + workers  # results held at once (memory bound): done ones wait for their turn
    # spawn: the parent may run threads (a moto server, Prefect); forking those is unsafe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers - 1, mp_context=context, initializer=_init_worker, initargs=(endpoint, region, needs_s3)
    ) as pool:
        slots: deque[Future[TaskResult] | TaskResult] = deque()  # in task order

        def submit(task_folder: Path, task_name: str, task: Sequence[LogObject]) -> Future[TaskResult]:
            return pool.submit(_read_in_worker, task, sources, max_segment_rows, task_folder, task_name)

        with _main_script_not_rerun():  # the pool starts its processes on these first submits
            slots.extend(submit(*args) for args in itertools.islice(tasks, queued))
        while True:
            busy = sum(isinstance(slot, Future) and not slot.done() for slot in slots)
            for args in itertools.islice(tasks, max(0, min(queued - busy, most - len(slots)))):
                slots.append(submit(*args))  # keep the pool busy
            if not slots:
                return
            head = slots[0]
            if isinstance(head, Future) and not head.done() and len(slots) < most:
                args = next(tasks, None)
                if args is not None:  # rather than wait, run the next task here
                    task_folder, task_name, task = args
                    slots.append(read_task(task, client, sources, max_segment_rows, task_folder, task_name))
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
def few_collections() -> Iterator[None]:
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
