"""List and read CloudTrail log objects in S3 or in a local folder with the same layout.   [I/O edge]

Layouts understood (below an optional trail prefix; a source may also hold several trail roots one or two
levels down, like the real-data corpus `corpus/<source>/AWSLogs/...`):

    AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<file>.json.gz            single-account trail
    AWSLogs/o-xxxx/<account>/CloudTrail/<region>/YYYY/MM/DD/<file>.json.gz     organization trail
    AWSLogs/.../CloudTrail-Digest/... and .../CloudTrail-Insight/...            listed, skipped, counted

Accounts, regions, years, months and days are discovered with Delimiter listings, pruned by the date range,
so a range never turns into a whole-bucket scan.

A local folder is listed without trusting it: a symlink is followed only when its target stays inside the
trail (otherwise the object is `refused`: reported by name, its target never read, not even stat'ed), and a
file name that is not UTF-8 is refused too (shown with escapes). `fetch` reads only regular files (never
blocks on a FIFO). The listing decides; a file swapped for a symlink between listing and reading is not
re-checked. The Prefect flow maps `list_objects` over the `TrailDay`s
that `discover_partitions` returns (one task per account/region/day); the CLI does the same in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.ingest_failures import RefusedObject

log = logging.getLogger(__name__)

LOG_KIND = "CloudTrail"
DIGEST_KIND = "CloudTrail-Digest"
INSIGHT_KIND = "CloudTrail-Insight"
KINDS: tuple[str, ...] = (LOG_KIND, DIGEST_KIND, INSIGHT_KIND)
SKIPPED_KINDS: frozenset[str] = frozenset({DIGEST_KIND, INSIGHT_KIND})

_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")
_ACCOUNT = re.compile(r"^\d{6,16}$")  # real ids are 12 digits; published samples carry 9 and 13
# Ranges up to this many days list their day prefixes directly instead of discovering years and months.
_DIRECT_DAYS = 31
# How far below the source a trail root (the folder holding AWSLogs/) may sit.
_ROOT_DEPTH = 2


@dataclass(frozen=True)
class LogObject:
    """One object of a trail. `(bucket, key, etag)` is its identity in the lake's ledger.

    For a local folder, `bucket` is the trail root (the folder holding AWSLogs/), `key` the path below it and
    `etag` a fingerprint of mtime and size, so the same file has the same identity whichever parent folder a
    run was pointed at.
    """

    source: str  # s3://bucket/key, or the absolute file path
    bucket: str
    key: str
    etag: str
    size: int
    kind: str = LOG_KIND  # CloudTrail, CloudTrail-Digest or CloudTrail-Insight
    refused: str | None = None  # why the listing will not let it be read (ingest quarantines it by name)

    @property
    def skipped(self) -> bool:
        """Digest and Insight objects are listed and counted but never read."""
        return self.kind in SKIPPED_KINDS

    @property
    def is_s3(self) -> bool:
        return self.source.startswith("s3://")


@dataclass(frozen=True)
class TrailDay:
    """One account/region/day of one trail: the unit a flow maps over. Small and picklable (no client)."""

    source: str  # the source the run was pointed at: s3://bucket[/prefix] or a folder
    bucket: str  # bucket name, or the trail root folder
    account: str
    region: str
    day: dt.date
    organization: str | None
    prefixes: tuple[str, ...]  # the day prefix of each kind present (log, digest, insight), ending in '/'


@dataclass
class ListingStats:
    """What a listing cost: how many list calls (logged) and over which prefixes."""

    calls: int = 0
    prefixes: list[str] = field(default_factory=list)


class SourceError(ValueError):
    """The source cannot be listed (missing folder, bad URI, no such bucket): the message says what to do."""


# --- stores: the two ways of listing ---------------------------------------------------------------------


class _Store(Protocol):
    bucket: str

    def dirs(self, prefix: str) -> list[str]:
        """Names of the immediate child 'folders' of `prefix` ('' = the top)."""
        ...

    def objects(self, prefix: str) -> Iterator[LogObject]:
        """Every object below `prefix`, recursively, in key order."""
        ...


class _S3Store:
    def __init__(self, client: Any, bucket: str, stats: ListingStats) -> None:
        self.client = client
        self.bucket = bucket
        self.stats = stats

    def _pages(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.stats.prefixes.append(kwargs.get("Prefix", ""))
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, **kwargs):
            self.stats.calls += 1
            yield page

    def dirs(self, prefix: str) -> list[str]:
        names: list[str] = []
        for page in self._pages(Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.append(common["Prefix"][len(prefix) :].rstrip("/"))
        return names

    def objects(self, prefix: str) -> Iterator[LogObject]:
        for page in self._pages(Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):  # a folder marker written by a console upload
                    continue
                yield LogObject(
                    source=f"s3://{self.bucket}/{key}",
                    bucket=self.bucket,
                    key=key,
                    etag=item.get("ETag", "").strip('"'),
                    size=int(item.get("Size", 0)),
                )


_OUTSIDE = "a symlink to a path outside its trail: not followed, not read"
_OUTSIDE_FOLDER = "in a folder linked from outside its trail: not read"
_NOT_UTF8 = "the file name is not valid UTF-8 (shown with \\x escapes): not read; rename it"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _printable_path(path: str) -> str:
    """`path` as valid UTF-8: a name that is not (surrogate-escaped by os) gets \\x escapes instead."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _raise(error: OSError) -> None:
    raise error


class _LocalStore:
    def __init__(self, root: Path, stats: ListingStats) -> None:
        self.root = root
        self.bucket = str(root)
        self.stats = stats

    def dirs(self, prefix: str) -> list[str]:
        self.stats.calls += 1
        self.stats.prefixes.append(prefix)
        try:
            return sorted(entry.name for entry in os.scandir(self.root / prefix) if entry.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def objects(self, prefix: str) -> Iterator[LogObject]:
        self.stats.calls += 1
        self.stats.prefixes.append(prefix)
        top = self.root / prefix
        if not top.is_dir():
            return
        root = os.path.realpath(self.bucket)  # once per day folder: ~80 us, too slow per file
        # A day folder reached through a symlink out of the trail: its files are outside too.
        folder_refused = None if _inside(os.path.realpath(top), root) else _OUTSIDE_FOLDER
        # Plain os/str calls, not a Path per file: a trail has tens of thousands of small files. An unreadable
        # folder raises (a fault of the run) rather than being skipped in silence; symlinked subfolders are
        # not descended into.
        for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
            dirnames.sort()
            below = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            key_prefix = "" if below == "." else below + "/"
            for name in sorted(filenames):
                found = self._object(os.path.join(dirpath, name), key_prefix + name, root, folder_refused)
                if found is not None:
                    yield found

    def _object(self, path: str, key: str, root: str, refused: str | None) -> LogObject | None:
        """The object at `path`; None when it vanished since the folder was read."""
        try:
            info = os.lstat(path)  # a regular file: the same as stat; a symlink: followed only if it stays inside
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode) and refused is None:
            if _inside(os.path.realpath(path), root):
                with contextlib.suppress(OSError):  # dangling or looping: reading it will say why
                    info = os.stat(path)
            else:
                refused = _OUTSIDE
        bucket = self.bucket
        if not path.isascii():
            try:
                path.encode()
            except UnicodeEncodeError:
                refused = _NOT_UTF8
                path, key, bucket = _printable_path(path), _printable_path(key), _printable_path(bucket)
        return LogObject(
            source=path,
            bucket=bucket,
            key=key,
            etag=f"{info.st_mtime_ns:x}-{info.st_size:x}",
            size=info.st_size,
            refused=refused,
        )


def parse_source(source: str) -> tuple[str | None, str]:
    """`s3://bucket/prefix` -> (bucket, 'prefix/'); a folder -> (None, absolute path)."""
    if source.startswith("s3://"):
        bucket, _, prefix = source[len("s3://") :].partition("/")
        if not bucket:
            raise SourceError(f"{source!r} names no bucket: use s3://BUCKET[/PREFIX]")
        prefix = prefix.strip("/")
        return bucket, f"{prefix}/" if prefix else ""
    if "://" in source:
        raise SourceError(f"{source!r}: only s3://bucket[/prefix] URIs and local folders are supported")
    path = Path(source).expanduser().resolve()
    if not path.is_dir():
        raise SourceError(f"{source!r} is not a folder: pass a folder holding AWSLogs/... or s3://bucket[/prefix]")
    return None, str(path)


def _trail_roots(store: _Store, prefix: str) -> list[str]:
    """Prefixes (ending in '/') that hold an AWSLogs/ folder: `prefix` itself, or up to two levels below."""
    level = [prefix]
    for _depth in range(_ROOT_DEPTH + 1):
        roots: list[str] = []
        deeper: list[str] = []
        for candidate in level:
            children = store.dirs(candidate)
            if "AWSLogs" in children:
                roots.append(candidate)
            else:
                deeper.extend(f"{candidate}{child}/" for child in children)
        if roots or not deeper:
            # Roots found at this depth end the search: their siblings are other trails only if they
            # hold AWSLogs/ at the same depth, which the listing just checked.
            return roots
        level = deeper
    return []


def _accounts(store: _Store, root: str) -> Iterator[tuple[str | None, str, str]]:
    """(organization, account, account prefix) for each account below `root`AWSLogs/."""
    top = f"{root}AWSLogs/"
    for name in store.dirs(top):
        if _ORG.match(name):
            for account in store.dirs(f"{top}{name}/"):
                if _ACCOUNT.match(account):
                    yield name, account, f"{top}{name}/{account}/"
        elif _ACCOUNT.match(name):
            yield None, name, f"{top}{name}/"
        else:
            log.warning("skipping %s%s/: neither an account id nor an organization id", top, name)


def _in_range(low: dt.date, high: dt.date, since: dt.date | None, until: dt.date | None) -> bool:
    """Whether [low, high] overlaps [since, until]."""
    return (since is None or high >= since) and (until is None or low <= until)


def _days(store: _Store, region_prefix: str, since: dt.date | None, until: dt.date | None) -> list[dt.date]:
    """The day folders below `<region>/` in [since, until]: years, then months, then days, pruned."""
    found: list[dt.date] = []
    for year in sorted(store.dirs(region_prefix)):
        if not (year.isdigit() and len(year) == 4):
            continue
        y = int(year)
        if not _in_range(dt.date(y, 1, 1), dt.date(y, 12, 31), since, until):
            continue
        for month in sorted(store.dirs(f"{region_prefix}{year}/")):
            if not (month.isdigit() and 1 <= int(month) <= 12):
                continue
            m = int(month)
            last = (dt.date(y + m // 12, m % 12 + 1, 1) - dt.timedelta(days=1)).day
            if not _in_range(dt.date(y, m, 1), dt.date(y, m, last), since, until):
                continue
            for day in sorted(store.dirs(f"{region_prefix}{year}/{month}/")):
                try:
                    date = dt.date(y, m, int(day))
                except ValueError:
                    continue
                if _in_range(date, date, since, until):
                    found.append(date)
    return found


def _day_prefix(region_prefix: str, day: dt.date) -> str:
    return f"{region_prefix}{day:%Y/%m/%d}/"


def _direct_days(since: dt.date | None, until: dt.date | None) -> list[dt.date] | None:
    """Every day of a short closed range (listed directly, without discovery); None otherwise."""
    if since is None or until is None or (until - since).days >= _DIRECT_DAYS:
        return None
    return [since + dt.timedelta(days=offset) for offset in range((until - since).days + 1)]


def _discover(
    store: _Store,
    source: str,
    prefix: str,
    since: dt.date | None,
    until: dt.date | None,
    accounts: Sequence[str],
    regions: Sequence[str],
) -> list[TrailDay]:
    direct = _direct_days(since, until)
    days: list[TrailDay] = []
    for root in _trail_roots(store, prefix):
        # Local day prefixes are relative to the trail root, so object identities do not depend on which
        # parent folder the run was pointed at.
        local = isinstance(store, _LocalStore)
        bucket = str(Path(store.bucket) / root) if local else store.bucket
        strip = len(root) if local else 0
        for organization, account, account_prefix in _accounts(store, root):
            if accounts and account not in accounts:
                continue
            kinds = [kind for kind in store.dirs(account_prefix) if kind in KINDS]
            per_day: dict[tuple[str, dt.date], list[str]] = {}
            for kind in sorted(kinds, key=KINDS.index):
                for region in store.dirs(f"{account_prefix}{kind}/"):
                    if regions and region not in regions:
                        continue
                    region_prefix = f"{account_prefix}{kind}/{region}/"
                    for day in direct if direct is not None else _days(store, region_prefix, since, until):
                        per_day.setdefault((region, day), []).append(_day_prefix(region_prefix, day)[strip:])
            for (region, day), prefixes in sorted(per_day.items()):
                days.append(TrailDay(source, bucket, account, region, day, organization, tuple(prefixes)))
    return days


def _store_for(source: str, client: Any | None, stats: ListingStats) -> tuple[_Store, str]:
    """The store to list `source` with, and the prefix inside it where the source starts."""
    bucket, where = parse_source(source)
    if bucket is None:
        return _LocalStore(Path(where), stats), ""
    if client is None:
        raise SourceError(f"{source}: an S3 source needs an S3 client (pipeline.aws.client('s3', ...))")
    return _S3Store(client, bucket, stats), where


def discover_partitions(
    source: str,
    client: Any | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    accounts: Sequence[str] = (),
    regions: Sequence[str] = (),
    stats: ListingStats | None = None,
) -> list[TrailDay]:
    """Every account/region/day of the trail(s) under `source` within [since, until] (inclusive).

    `client` is a boto3 S3 client for s3:// sources (ignored for folders). Only Delimiter listings are made
    here; a short closed range names its day prefixes directly without listing years or months.
    """
    if since is not None and until is not None and since > until:
        raise SourceError(f"--since {since} is after --until {until}: swap them")
    stats = stats if stats is not None else ListingStats()
    store, prefix = _store_for(source, client, stats)
    days = _discover(store, source, prefix, since, until, accounts, regions)
    log.info("%s: %d trail days after %d list calls", source, len(days), stats.calls)
    return days


def list_objects(trail_day: TrailDay, client: Any | None = None, stats: ListingStats | None = None) -> list[LogObject]:
    """The objects of one trail day (all kinds; digest and insight objects come back with `skipped` set)."""
    stats = stats if stats is not None else ListingStats()
    if trail_day.source.startswith("s3://"):
        if client is None:
            raise SourceError(f"{trail_day.source}: listing S3 needs an S3 client")
        store: _Store = _S3Store(client, trail_day.bucket, stats)
    else:
        store = _LocalStore(Path(trail_day.bucket), stats)
    found: list[LogObject] = []
    for prefix in trail_day.prefixes:
        kind = _kind_of(prefix)
        found.extend(_with_kind(store.objects(prefix), kind))
    return found


def _kind_of(key: str) -> str:
    for kind in (DIGEST_KIND, INSIGHT_KIND):
        if f"/{kind}/" in f"/{key}":
            return kind
    return LOG_KIND


def _with_kind(objects: Iterable[LogObject], kind: str) -> Iterator[LogObject]:
    for obj in objects:
        yield obj if obj.kind == kind else dataclasses.replace(obj, kind=kind)


def list_source(
    source: str,
    client: Any | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    accounts: Sequence[str] = (),
    regions: Sequence[str] = (),
    stats: ListingStats | None = None,
) -> list[LogObject]:
    """Every object of every trail day of `source` in range, in key order per day (what `ingest` reads)."""
    stats = stats if stats is not None else ListingStats()
    found: list[LogObject] = []
    for day in discover_partitions(source, client, since, until, accounts, regions, stats):
        found.extend(list_objects(day, client, stats))
    return found


# --- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """The bytes of one object as stored (still compressed) and when the object was written (S3 LastModified,
    a file's mtime; None when unknown): an eventTime more than a day after it is not real."""

    data: bytes
    written: dt.datetime | None = None


def fetch(obj: LogObject, client: Any | None = None) -> Fetched:
    """Read one object's stored bytes. S3 needs `client`. Raises RefusedObject for an object the listing refused
    or a local file that is not a regular file, OSError when the file cannot be read."""
    if obj.refused is not None:
        raise RefusedObject(obj.refused)
    if obj.is_s3:
        if client is None:
            raise SourceError(f"{obj.source}: reading S3 needs an S3 client")
        response = client.get_object(Bucket=obj.bucket, Key=obj.key)
        return Fetched(response["Body"].read(), response.get("LastModified"))
    # Not Path(...).read_bytes(): its path parsing costs ~10 us a file. O_NONBLOCK: opening a FIFO must not wait
    # for a writer (it is refused just below); it changes nothing for a regular file.
    descriptor = os.open(obj.source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise RefusedObject("not a regular file (a FIFO, socket, device or folder): not read")
        return Fetched(handle.read(), dt.datetime.fromtimestamp(status.st_mtime, dt.UTC))
