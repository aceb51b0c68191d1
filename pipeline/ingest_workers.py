"""Reading log objects into Arrow batches, in this process or in worker processes, and the process tuning for it.

An object is fetched, gunzipped (isal), split and normalized by `events.rows_from_log`; its rows become Arrow
batches column-wise, a group of consecutive objects at a time. With `workers > 1`, `workers - 1` processes read
groups over a bounded queue and this process reads one itself whenever the next result is not ready; results
come back in listing order whatever the timing, so the run that consumes them keeps the first copy of a
duplicated eventID in listing order.
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
from typing import Any

import pyarrow as pa

from pipeline import events, ingest_failures
from pipeline.events import RejectedRecord
from pipeline.ingest_failures import LogFormatError
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
_IN_FLIGHT_PER_WORKER = 2  # one group being read, one waiting: enough to keep workers busy, half the memory
# Objects are read in groups of about this much stored data (or this many objects): ~5 MB of JSON, ~7 MB of
# Arrow sent back from a worker (smaller groups cost the same CPU and ~40 MB less memory in flight).
_GROUP_BYTES = 1 << 19
_GROUP_OBJECTS = 512
_INGEST_GC_THRESHOLDS = (100_000, 50, 100)
# Starting a worker process costs ~0.5 s: below this much input per worker, fewer workers (or none) are faster.
MIN_BYTES_PER_WORKER = 4 << 20


# --- reading a group of objects (in a worker process when workers > 1) ---------------------------------------


@dataclass
class ObjectResult:
    obj: LogObject
    seen: int
    rejected: list[RejectedRecord]
    rows: int = 0  # normalized rows this object contributed to its group's batches (consecutive, in order)
    error: str | None = None  # why the object as a whole is unreadable
    payload: bytes | None = None  # the stored bytes, kept only for the quarantine (None: they were not read)


@dataclass
class GroupResult:
    """Consecutive objects read together: real trails are mostly small files (tens of records), and one
    Arrow build, one pickle and one lake add per object would cost more than reading them."""

    objects: list[ObjectResult]
    batches: list[pa.RecordBatch]  # every batch holds whole objects' rows, in object order


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


def read_group(
    objects: Sequence[LogObject], client: Any | None, event_sources: Sequence[str], max_batch_rows: int
) -> GroupResult:
    """Read consecutive objects; their rows become Arrow batches of about _ARROW_CHUNK rows (at most about
    `max_batch_rows`), cut only between objects so each batch maps to whole objects (and a lake batch can commit
    between any two)."""
    results: list[ObjectResult] = []
    batches: list[pa.RecordBatch] = []
    pending: list[tuple[Any, ...]] = []
    chunk = min(_ARROW_CHUNK, max_batch_rows)  # a batch never holds more than a commit's worth
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


# --- scheduling ---------------------------------------------------------------------------------------------


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
    gc.set_threshold(*_INGEST_GC_THRESHOLDS)  # this process only ingests: see few_collections
    # Its Arrow data is built, pickled to the parent and dropped: mimalloc's caching would keep ~35 MB more
    # resident per worker than the system allocator, for no measurable speed.
    pa.set_memory_pool(pa.system_memory_pool())
    if needs_s3:  # a process cannot share its parent's client: make one the same way
        from pipeline import aws  # here: boto3 costs a worker reading a folder ~0.3 s of start-up

        _worker_client = aws.client("s3", endpoint_url=endpoint_url, region=region)


def _read_in_worker(objects: Sequence[LogObject], event_sources: Sequence[str], max_batch_rows: int) -> GroupResult:
    return read_group(objects, _worker_client, event_sources, max_batch_rows)


def read_groups(
    objects: Sequence[LogObject], client: Any | None, event_sources: Sequence[str], workers: int, max_batch_rows: int
) -> Iterator[GroupResult]:
    """Group results in the order of `objects`. With workers > 1, `workers - 1` processes read groups and this
    process reads one itself whenever the next result is not ready yet, so `workers` cores read and none
    waits: a third process on two cores, and every group's Arrow batches pickled across, cost ~30% more CPU
    than they saved. A bounded number of groups are in flight."""
    workers = min(workers, len(objects), sum(obj.size for obj in objects) // max(MIN_BYTES_PER_WORKER, 1))
    groups = _groups(objects)
    if workers <= 1:
        for group in groups:
            yield read_group(group, client, event_sources, max_batch_rows)
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
            slots.extend(
                pool.submit(_read_in_worker, group, sources, max_batch_rows)
                for group in itertools.islice(groups, queued)
            )
        while True:
            busy = sum(isinstance(slot, Future) and not slot.done() for slot in slots)
            for group in itertools.islice(groups, max(0, min(queued - busy, most - len(slots)))):
                slots.append(pool.submit(_read_in_worker, group, sources, max_batch_rows))  # keep the pool busy
            if not slots:
                return
            head = slots[0]
            if isinstance(head, Future) and not head.done() and len(slots) < most:
                group = next(groups, None)
                if group is not None:  # rather than wait, read the next group here
                    slots.append(read_group(group, client, event_sources, max_batch_rows))
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
