"""A lake on S3 (`s3://bucket/prefix`): commits by conditional writes, and a local replica readers go through.

On S3 the lake has the local layout (events/, rollups/hourly/, _ledger/ids/, _ledger/fingerprints/), plus the log
that replaces the local ledger folder and lock:

    _ledger/log/<seq, 12 digits>.json   the BatchRecord of commit number seq (1, 2, ...): the commit point

A writer uploads a batch's files under their final (unique) names first; they are invisible, because readers
only know files through the log. It then creates log entry n+1 with `If-None-Match: *`: of concurrent writers
exactly one creates it; a loser (412) syncs the entries it missed, re-checks its event_ids against them (rows a
winner committed meanwhile are dropped, the parts re-uploaded) and tries n+2. No lock, no lost or duplicated
event, from any number of machines. A crashed writer leaves only unreferenced objects (a rerun writes new
names); readers never see them.

Every process works on a local replica of the lake (`replica_dir`): `sync` reads the log entries after the last
one it has (a listing that starts after it: the cost follows what is new, not the history), writes them as the
local ledger records, downloads their id files and fingerprint runs (what a writer's event-id check needs), and
records each event and rollup file as a stub `<name>.parquet.remote` holding its ETag. `fetch` (called by
`committed_files` for the range a reader asks for) turns stubs into files: a read-through cache keyed by file
name + ETag (`GetObject` with `If-Match`), bounded by `cache_bytes` (least recently used files go back to stubs).
DuckDB then reads plain local Parquet, natively.

The outbox on an S3 lake lives in the replica (a documented alternative to conditional-write objects): alerts
are queued and published by the one scheduled detect flow of a deployment, which keeps its replica directory on
a persistent volume (`KEYTRAIL_CACHE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pipeline.lake.layout import batches_dir, events_dir, ledger_dir, rollups_dir
from pipeline.lake.ledger import BatchRecord, FileEntry, write_atomic
from pipeline.settings import Settings

log = logging.getLogger(__name__)

REMOTE_MARKER = "_remote.json"  # in a replica: which S3 lake it mirrors
STUB_SUFFIX = ".remote"
DEFAULT_CACHE_BYTES = 2 << 30
_LOG = "_ledger/log/"


class RemoteSpec(msgspec.Struct):
    url: str
    endpoint_url: str | None = None
    region: str | None = None
    cache_bytes: int = DEFAULT_CACHE_BYTES
    last_seq: int = 0


def is_remote(lake: str | Path) -> bool:
    """An s3:// lake (a Path built from the URL has lost one slash: `s3:/bucket/...`)."""
    return str(lake).startswith(("s3://", "s3:/"))


def normalize_url(lake: str | Path) -> str:
    text = str(lake)
    if text.startswith("s3:/") and not text.startswith("s3://"):
        text = "s3://" + text[len("s3:/") :]
    return text.rstrip("/")


def replica_dir(url: str, cache_root: Path) -> Path:
    """Where this machine keeps its replica of the lake at `url`."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(cache_root) / f"lake-{digest}"


@dataclass
class RemoteLake:
    """The S3 side of a lake and the replica that mirrors it."""

    replica: Path
    spec: RemoteSpec
    client: Any
    _pending: int = 0  # the log entry this process just created

    @property
    def bucket(self) -> str:
        return self.spec.url[len("s3://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.spec.url[len("s3://") :].split("/", 1)
        return rest[1] + "/" if len(rest) > 1 and rest[1] else ""

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def _save(self) -> None:
        write_atomic(self.replica / REMOTE_MARKER, msgspec.json.encode(self.spec))

    # --- the log ------------------------------------------------------------------------------------------

    def _new_entries(self) -> list[tuple[int, str]]:
        """(seq, key) of the log entries after the last one synced, in order."""
        start_after = self.key(f"{_LOG}{self.spec.last_seq:012d}.json")
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(_LOG), StartAfter=start_after):
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                if name.endswith(".json") and name[:-5].isdigit():
                    found.append((int(name[:-5]), item["Key"]))
        return sorted(found)

    def sync(self) -> int:
        """Bring the replica up to the log: new ledger records, their index files, stubs for their event and
        rollup files; superseded files removed. Returns how many entries were new."""
        entries = self._new_entries()
        for seq, key in entries:
            if seq != self.spec.last_seq + 1:
                break  # a gap: an entry being created right now; the next sync takes it
            data = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            self._apply(msgspec.json.decode(data, type=BatchRecord))
            self.spec.last_seq = seq
        if entries:
            self._save()
        return len(entries)

    def _apply(self, record: BatchRecord) -> None:
        for rel in record.index:
            self._download(rel, self.replica / rel, None)
        for entry in record.published:
            stub = self.replica / (entry.path + STUB_SUFFIX)
            if not (self.replica / entry.path).exists():
                write_atomic(stub, (entry.etag or "").encode())
        for rel in record.superseded:
            for path in (self.replica / rel, self.replica / (rel + STUB_SUFFIX)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        write_atomic(batches_dir(self.replica) / f"{record.batch_id}.json", msgspec.json.encode(record))

    def upload(self, local: Path, rel: str) -> str:
        """Put a file under its final key (invisible until a log entry names it); its ETag."""
        with open(local, "rb") as handle:
            return self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=handle)["ETag"]

    def try_commit(self, record: BatchRecord) -> bool:
        """Create the next log entry for `record`; False when another writer created it first (sync, re-check,
        retry)."""
        from botocore.exceptions import ClientError

        seq = self.spec.last_seq + 1
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(f"{_LOG}{seq:012d}.json"),
                Body=msgspec.json.encode(record),
                IfNoneMatch="*",
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or exc.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                return False
            raise
        self._pending = seq
        return True

    def committed(self, record: BatchRecord) -> None:
        """The writer published its own entry into the replica: count it as synced (a crash before this leaves
        the entry for the next `sync`, which applies it like any other)."""
        self.spec.last_seq = self._pending
        self._save()

    # --- the read-through cache ---------------------------------------------------------------------------

    def _download(self, rel: str, target: Path, etag: str | None) -> None:
        options = {"IfMatch": etag} if etag else {}
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(rel), **options)["Body"].read()
        write_atomic(target, body)

    def fetch(self, wanted: list[Path]) -> None:
        """Make the files in `wanted` (replica paths) local, then keep the cache within its bound."""
        for path in wanted:
            stub = path.with_name(path.name + STUB_SUFFIX)
            if path.exists() or not stub.exists():
                if path.exists():
                    os.utime(path)  # recently used
                continue
            rel = path.relative_to(self.replica).as_posix()
            self._download(rel, path, stub.read_text() or None)
            stub.unlink()
        self._evict(set(wanted))

    def _evict(self, keep: set[Path]) -> None:
        cached = [
            path
            for root in (events_dir(self.replica), rollups_dir(self.replica))
            if root.is_dir()
            for path in root.rglob("*.parquet")
        ]
        sizes = {path: path.stat() for path in cached}
        total = sum(stat.st_size for stat in sizes.values())
        for path in sorted(cached, key=lambda p: sizes[p].st_mtime):
            if total <= self.spec.cache_bytes:
                return
            if path in keep:
                continue
            write_atomic(path.with_name(path.name + STUB_SUFFIX), b"")
            path.unlink()
            total -= sizes[path].st_size


def open_remote(
    url: str | Path,
    client: Any,
    cache_root: Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> RemoteLake:
    """The replica of the S3 lake at `url` on this machine (created on first use), synced with the log."""
    url = normalize_url(url)
    replica = replica_dir(url, cache_root)
    meta = getattr(client, "meta", None)
    endpoint_url = endpoint_url or getattr(meta, "endpoint_url", None)
    region = region or getattr(meta, "region_name", None)
    if endpoint_url and endpoint_url.endswith(".amazonaws.com"):
        endpoint_url = None  # boto3's own default: let a later client find it the same way
    marker = replica / REMOTE_MARKER
    if marker.exists():
        spec = msgspec.json.decode(marker.read_bytes(), type=RemoteSpec)
        spec.cache_bytes = cache_bytes
    else:
        spec = RemoteSpec(url, endpoint_url, region, cache_bytes)
    ledger_dir(replica).mkdir(parents=True, exist_ok=True)
    remote = RemoteLake(replica, spec, client)
    remote._save()
    remote.sync()
    return remote


def refuse_replica(lake: Path, what: str) -> None:
    """Raise for work an S3 lake does not support yet (replacing files needs a superseding log entry)."""
    if (Path(lake) / REMOTE_MARKER).exists():
        raise RuntimeError(f"{what} of a lake on S3 is not supported yet: it would change only this machine's replica")


def attached(replica: Path) -> RemoteLake | None:
    """The RemoteLake a replica mirrors (a client made from its marker), or None for a plain local lake."""
    marker = Path(replica) / REMOTE_MARKER
    if not marker.exists():
        return None
    from pipeline import aws  # only S3 lakes need boto3 here

    spec = msgspec.json.decode(marker.read_bytes(), type=RemoteSpec)
    return RemoteLake(Path(replica), spec, aws.client("s3", endpoint_url=spec.endpoint_url, region=spec.region))


def entry_etags(entries: list[FileEntry], etags: dict[str, str]) -> None:
    """Record the uploaded ETags in a record's file entries (the replica's cache key)."""
    for entry in entries:
        entry.etag = etags.get(entry.path)


def resolve(
    lake: str | Path,
    client: Any | None = None,
    cache_root: Path | None = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> Path:
    """The directory to work on for `lake`: itself when local; for s3://bucket/prefix, this machine's replica
    (under `cache_root`, default `<tmp>/keytrail-cache`), synced with the log."""
    if not is_remote(lake):
        return Path(lake)
    if client is None:
        from pipeline import aws

        client = aws.client("s3", endpoint_url=endpoint_url, region=region)
    root = cache_root if cache_root is not None else Path(tempfile.gettempdir()) / "keytrail-cache"
    return open_remote(lake, client, root, endpoint_url=endpoint_url, region=region, cache_bytes=cache_bytes).replica


def lake_dir(lake: str | Path | None, settings: Settings) -> Path:
    """The lake to work on: `lake`, else `settings.lake` (KEYTRAIL_LAKE); for an s3:// lake, this machine's
    replica (under KEYTRAIL_CACHE, reached through KEYTRAIL_ENDPOINT_URL when set)."""
    return resolve(
        lake if lake is not None else settings.lake,
        cache_root=settings.cache_dir,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        cache_bytes=settings.cache_bytes,
    )
