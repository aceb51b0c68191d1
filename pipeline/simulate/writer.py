"""The genuine CloudTrail S3 layout: gzip'd `{"Records":[...]}` log files and hourly digest files.

    <prefix>AWSLogs/[<org-id>/]<acct>/CloudTrail/<region>/YYYY/MM/DD/
        <acct>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<16 alnum>.json.gz
    <prefix>AWSLogs/[<org-id>/]<acct>/CloudTrail-Digest/<region>/YYYY/MM/DD/
        <acct>_CloudTrail-Digest_<region>_<trail>_<home region>_<YYYYMMDDTHHmmssZ>.json.gz

One log file per account/region/5-minute window (split past MAX_RECORDS, as CloudTrail does for busy
windows); gzip mtime is 0 so the same seed gives the same bytes. Destinations are a local folder or an S3
bucket through a boto3 client passed in.
"""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from isal import igzip

from pipeline.simulate.calls import Chunk
from pipeline.simulate.digests import DigestDay

WINDOW_SECONDS = 300
MAX_RECORDS = 2000
GZIP_LEVEL = 2  # isal level 2: ~1.6 GB/s here at a ratio close to zlib's default
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_KMS_MARK = b'"eventSource":"kms.amazonaws.com"'
_SM_MARK = b'"eventSource":"secretsmanager.amazonaws.com"'


@dataclass(frozen=True)
class Destination:
    """A local folder (`bucket` None, `root` the folder) or `s3://bucket/prefix`."""

    root: str
    bucket: str | None
    prefix: str  # '' or ending with '/'

    @classmethod
    def parse(cls, out: str) -> Destination:
        if out.startswith("s3://"):
            bucket, _, prefix = out[5:].partition("/")
            if not bucket:
                raise ValueError(f"no bucket in {out!r}: use s3://bucket[/prefix]")
            prefix = prefix.strip("/")
            return cls(out, bucket, prefix + "/" if prefix else "")
        return cls(out, None, "")

    @property
    def trail_bucket(self) -> str:
        """The bucket name digests refer to (a local folder stands in for a bucket)."""
        return self.bucket or "keytrail-simulated-trail"


@dataclass
class ChunkFiles:
    """What one chunk produced: objects to store (key, bytes) and counts."""

    objects: list[tuple[str, bytes]]
    log_files: int = 0
    digest_files: int = 0
    events: int = 0
    kms_events: int = 0
    secrets_events: int = 0
    digest_day: DigestDay | None = None  # signed into digest objects by the parent, in day order


def _account_root(c: Chunk, prefix: str) -> str:
    org = f"{c.world.org_id}/" if c.world.org_trail else ""
    return f"{prefix}AWSLogs/{org}{c.account}/"


def chunk_files(c: Chunk, prefix: str, trail_bucket: str, *, digests: bool = True) -> ChunkFiles:
    """Gzip a chunk's records into 5-minute log files (+ hourly digests). Sorts the chunk's events."""
    c.events.sort(key=itemgetter(0))
    names = random.Random(f"{c.world.seed}:files:{c.account}:{c.region}:{c.day_index}")
    root = _account_root(c, prefix)
    day_path = f"{c.day:%Y/%m/%d}"
    stamp = f"{c.day:%Y%m%d}"
    out = ChunkFiles([])
    by_hour: dict[int, list[dict[str, Any]]] = {}
    events, count = c.events, len(c.events)
    i = 0
    while i < count:
        window = events[i][0] // WINDOW_SECONDS
        j = i
        limit = min(count, i + MAX_RECORDS)
        while j < limit and events[j][0] // WINDOW_SECONDS == window:
            j += 1
        raw = ('{"Records":[' + ",".join(text for _, text in events[i:j]) + "]}").encode()
        start = window * WINDOW_SECONDS
        suffix = "".join(names.choice(_ALNUM) for _ in range(16))
        key = (
            f"{root}CloudTrail/{c.region}/{day_path}/{c.account}_CloudTrail_{c.region}_{stamp}T"
            f"{start // 3600:02d}{start // 60 % 60:02d}Z_{suffix}.json.gz"
        )
        out.objects.append((key, igzip.compress(raw, GZIP_LEVEL, mtime=0)))
        out.log_files += 1
        out.events += j - i
        out.kms_events += raw.count(_KMS_MARK)
        out.secrets_events += raw.count(_SM_MARK)
        if digests:
            by_hour.setdefault(start // 3600, []).append({
                "s3Bucket": trail_bucket, "s3Object": key, "hashValue": hashlib.sha256(raw).hexdigest(),
                "hashAlgorithm": "SHA-256", "newestEventTime": c.at(events[j - 1][0]),
                "oldestEventTime": c.at(events[i][0]),
            })  # fmt: skip
        i = j
    if digests:
        out.digest_day = _digest_day(c, root, trail_bucket, by_hour)
        out.digest_files = 24  # hourly, even for hours without logs, as CloudTrail does
    return out


def _digest_day(c: Chunk, root: str, bucket: str, by_hour: dict[int, list[dict[str, Any]]]) -> DigestDay:
    """The day's hourly log lists; the parent process chains and signs them (`digests.DigestSigner`)."""
    trail = "org-trail" if c.world.org_trail else "management-events"
    return DigestDay(c.account, c.region, c.day.isoformat(), root, trail, c.world.home_region, bucket, by_hour)


class Sink:
    """Stores objects in a local folder, or in S3 through a passed-in client. Writes go through a thread pool
    (file creation and PUTs wait on I/O, not on the GIL). Keys already include the destination prefix."""

    def __init__(self, dest: Destination, s3_client: Any = None, threads: int = 8) -> None:
        if dest.bucket is not None and s3_client is None:
            raise ValueError("writing to s3:// needs an S3 client (pipeline.aws.client('s3', endpoint_url=...))")
        self.dest = dest
        self._client = s3_client
        self._made: set[Path] = set()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="keytrail-sim-writer")
        self._pending: list[Future[Any]] = []
        self.bytes_written = 0

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Store one object; `metadata` (S3 user metadata, e.g. a digest's signature) is dropped for folders."""
        self.bytes_written += len(data)
        if self.dest.bucket is None:
            path = Path(self.dest.root) / key
            if path.parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(path.parent)
            self._pending.append(self._pool.submit(path.write_bytes, data))
        else:
            extra = {"Metadata": metadata} if metadata else {}
            self._pending.append(
                self._pool.submit(self._client.put_object, Bucket=self.dest.bucket, Key=key, Body=data, **extra)
            )
        if len(self._pending) > 512:  # bound the memory held by queued writes
            self._drain()

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raises write/upload errors

    def close(self) -> None:
        try:
            self._drain()
        finally:
            self._pool.shutdown()
