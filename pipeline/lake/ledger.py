"""The ledger and the commit protocol: what each batch consumed, intents, the commit point, recovery, and which
files readers may see (see the package docstring for the layout and the protocol step by step)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from pipeline.lake.layout import batches_dir, intents_dir, ledger_dir, partition_dirs, staging_dir
from pipeline.times import stamp

log = logging.getLogger(__name__)

# Called with a stage name at the points where a crash matters; tests raise from it to simulate one.
Checkpoint = Callable[[str], None]


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

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"


class FileEntry(msgspec.Struct, omit_defaults=True):
    path: str  # relative to the lake
    rows: int
    etag: str | None = None  # on an S3 lake: the object's ETag (the replica's cache key)


class BatchRecord(msgspec.Struct, omit_defaults=True):
    """A ledger record (also the shape of an intent). `kind` is 'ingest', 'compact' or 'rollup' (a rebuild).
    `files` are event files, `rollups` the hourly rollup files committed with them (see `rollups`)."""

    batch_id: str
    kind: str
    committed_at: str | None  # None when the caller passed no `now` (library code reads no clock)
    files: list[FileEntry] = msgspec.field(default_factory=list)
    superseded: list[str] = msgspec.field(default_factory=list)  # files a compaction or rebuild replaced
    id_index: str | None = None  # before fingerprints: the batch's one id file (see `ids.upgrade`)
    index: list[str] = msgspec.field(default_factory=list)  # the batch's id files and fingerprint run
    objects: list[ObjectEntry] = msgspec.field(default_factory=list)
    events_kept: int = 0
    events_duplicate: int = 0
    rollups: list[FileEntry] = msgspec.field(default_factory=list)

    @property
    def published(self) -> list[FileEntry]:
        """Every file the record renames into the lake: events, then rollups."""
        return self.files + self.rollups


_record_decoder = msgspec.json.Decoder(BatchRecord)


def write_atomic(path: Path, data: bytes) -> None:
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
    folder = batches_dir(lake)
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
    folder = ledger_dir(lake)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _committed(lake: Path, batch_id: str) -> bool:
    return (batches_dir(lake) / f"{batch_id}.json").exists()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def recover_locked(lake: Path) -> int:
    """Finish or roll back interrupted commits and drop dead writers' staging. Caller holds the lake lock."""
    repaired = 0
    intents = intents_dir(lake)
    for intent_path in sorted(intents.glob("*.json")) if intents.is_dir() else []:
        intent = _record_decoder.decode(intent_path.read_bytes())
        if _committed(lake, intent.batch_id):  # committed: finish the cleanup (a compaction's old files)
            for rel in intent.superseded:
                _unlink(Path(lake) / rel)
        else:  # not committed: undo the renames
            for entry in intent.published:
                _unlink(Path(lake) / entry.path)
            for rel in [*intent.index, intent.id_index] if intent.id_index else intent.index:
                _unlink(Path(lake) / rel)
        log.warning("recovered interrupted %s batch %s", intent.kind, intent.batch_id)
        intent_path.unlink()
        repaired += 1
    staging = staging_dir(lake)
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
        return recover_locked(lake)


# --- readers ------------------------------------------------------------------------------------------------


def _hidden_files(lake: Path) -> set[Path]:
    """Files in events/ or rollups/ that readers must not see: those of commits, compactions or rebuilds still in
    progress."""
    hidden: set[Path] = set()
    intents = intents_dir(lake)
    for intent_path in intents.glob("*.json") if intents.is_dir() else []:
        try:
            intent = _record_decoder.decode(intent_path.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            continue  # finished meanwhile, or still being written (its files are not in events/ yet)
        if _committed(lake, intent.batch_id):
            hidden.update(Path(lake) / rel for rel in intent.superseded)
        else:
            hidden.update(Path(lake) / entry.path for entry in intent.published)
    return hidden


def committed_files(
    lake: Path, start: dt.date | None = None, end: dt.date | None = None, rollups: bool = False
) -> list[Path]:
    """The committed Parquet files of the partitions in [start, end] (inclusive; None = unbounded), sorted: the
    events', or with `rollups` the hourly rollups' (`committed_rollup_files`)."""
    from pipeline.lake import remote  # the replica of an S3 lake (see `remote`)

    mirror = remote.attached(lake)
    if mirror is not None:
        mirror.sync()
    hidden = _hidden_files(lake)
    files: list[Path] = []
    for folder in partition_dirs(lake, start, end, rollups):
        names = {path.name for path in folder.glob("*.parquet")}
        if mirror is not None:  # files not cached yet: a stub each
            names.update(
                path.name[: -len(remote.STUB_SUFFIX)] for path in folder.glob(f"*.parquet{remote.STUB_SUFFIX}")
            )
        files.extend(sorted(path for path in (folder / name for name in names) if path not in hidden))
    hidden |= _hidden_files(lake)  # an intent that appeared while listing
    files = [path for path in files if path not in hidden]
    if mirror is not None:
        mirror.fetch(files)
    return files


def committed_rollup_files(lake: Path, start: dt.date | None = None, end: dt.date | None = None) -> list[Path]:
    """The committed hourly rollup files of the days in [start, end], sorted (merge them: `rollups.read`)."""
    return committed_files(lake, start, end, rollups=True)


# --- committing -------------------------------------------------------------------------------------------


def new_batch_id(now: dt.datetime | None) -> str:
    """Unique across concurrent writers; sorts by time when the caller passed `now`."""
    suffix = uuid.uuid4().hex[:12]
    return f"{stamp(now)}-{suffix}" if now is not None else suffix


def publish(
    lake: Path,
    record: BatchRecord,
    moves: list[tuple[Path, Path]],
    checkpoint: Checkpoint | None,
    rollup_moves: list[tuple[Path, Path]] | None = None,
) -> None:
    """Intent, renames (events, then rollups), ledger record (the commit point), intent removed. Caller holds the
    lake lock. The intent names every file of both kinds, so recovery rolls them back or forward together."""
    intent_path = intents_dir(lake) / f"{record.batch_id}.json"
    write_atomic(intent_path, msgspec.json.encode(record))
    for source, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    if checkpoint is not None:
        checkpoint("events-published")  # tests inject a crash here: events renamed, their rollups not yet
    for source, target in rollup_moves or ():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    if checkpoint is not None:
        checkpoint("files-published")  # tests inject a crash here: files visible in events/, no ledger record
    write_atomic(batches_dir(lake) / f"{record.batch_id}.json", msgspec.json.encode(record))
    if checkpoint is not None:
        checkpoint("ledger-written")  # committed; a compaction's old files not yet deleted
    for rel in record.superseded:
        _unlink(Path(lake) / rel)
    intent_path.unlink()


def claim_staging(lake: Path, batch_id: str) -> tuple[Path, IO[bytes]]:
    """Create a writer's staging folder and hold its lock, the sign to `recover` that the writer is alive.

    Call it with the lake lock held, so `recover` never sees the folder before its lock is held (it would take
    the writer for dead and delete its staging). Closing the returned handle releases the lock.
    """
    folder = staging_dir(lake) / batch_id
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder.with_suffix(".lock"), "a+b")  # noqa: SIM115 - held until the caller closes it
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return folder, handle


def remove_staging(folder: Path) -> None:
    """Drop a finished writer's staging folder, then its lock (the lock last: it is what `recover` looks for)."""
    shutil.rmtree(folder, ignore_errors=True)
    _unlink(folder.with_suffix(".lock"))
