"""Judging one account/region's digest chain and log files (pure: what was read in, rows out).

Newest first, as CloudTrail means it: a digest's signature and hash are stated by the next digest
(`previousDigestSignature`, `previousDigestHashValue`); only a digest no later digest names (the newest) takes
its signature from its own metadata. Each digest must name the one before it; every hour between two digests
of a chain that has no digest is missing (however many in a row were deleted), and the hours between two chains
(logging or validation off) are a gap. A log file is valid when its uncompressed SHA-256 matches the hash a
valid digest states for it; a log file in the bucket that no digest lists is not covered.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.integrity.digest_file import DigestFile, is_backfill, signed_message
from pipeline.integrity.keys import PublicKeys
from pipeline.integrity.log_hash import LogHash
from pipeline.integrity.results import (
    DIGEST,
    LOG,
    MISSING,
    MODIFIED,
    MOVED,
    NOT_COVERED,
    UNSIGNED,
    VALID,
    IntegrityRow,
)
from pipeline.times import EPOCH, bucket_start, iso

HOUR = dt.timedelta(hours=1)
_DIGEST_STAMP = re.compile(r"_(\d{8}T\d{6}Z)(?:_backfill)?\.json\.gz$")
_LOG_STAMP = re.compile(r"_(\d{8}T\d{4}Z)_[^_/]+\.json\.gz$")
# A chain may be this much late or early between two digests before the hours between them count as a gap.
_SLACK = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class ReadDigest:
    """One digest object as read: where it was found, the SHA-256 of its uncompressed bytes, the parsed file
    (None when unreadable: `problem` says why) and the signature its metadata (or local sidecar) holds."""

    key: str
    sha256: str | None
    digest: DigestFile | None
    problem: str | None = None
    signature: str | None = None
    algorithm: str | None = None


@dataclass(frozen=True)
class TrailInput:
    """Everything read for one account/region: digests, and the log objects present with their hashes (None
    when not read: outside the reported period and listed by no reported digest). Rows are reported for periods
    in [report_from, report_until); digests are expected up to `expect_until` (None: no trailing-gap check)."""

    account: str
    region: str
    digests: Sequence[ReadDigest]
    logs: Mapping[str, LogHash | None]
    report_from: dt.datetime | None = None
    report_until: dt.datetime | None = None
    expect_until: dt.datetime | None = None
    checked_at: dt.datetime | None = None


@dataclass
class _Judged:
    read: ReadDigest
    status: str = VALID
    reasons: list[str] = field(default_factory=list)
    expected: str | None = None

    def fail(self, status: str, reason: str) -> None:
        if self.status in (VALID, UNSIGNED) or status == MODIFIED:
            self.status = status
        self.reasons.append(reason)


def key_time(key: str) -> dt.datetime | None:
    """The timestamp in a digest's or a log file's name (a digest: its end; a log: its 5-minute window)."""
    name = key.rpartition("/")[2]
    match = _DIGEST_STAMP.search(name) or _LOG_STAMP.search(name)
    if match is None:
        return None
    text = match.group(1)
    fmt = "%Y%m%dT%H%M%SZ" if len(text) == 16 else "%Y%m%dT%H%MZ"
    return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)


def _basename(key: str) -> str:
    return key.rpartition("/")[2]


def _trail_path(key: str) -> str:
    """The key from `AWSLogs/` on: a local copy of a trail drops the bucket prefix its digests name."""
    at = key.find("AWSLogs/")
    return key[at:] if at >= 0 else key


def judge_trail(trail: TrailInput, keys: PublicKeys) -> list[IntegrityRow]:
    """The integrity rows of one account/region, digests first, then log files."""
    readable = [d for d in trail.digests if d.digest is not None]
    chain = sorted((d for d in readable if not is_backfill(d.key)), key=lambda d: d.digest.end)  # type: ignore[union-attr]
    backfill = [d for d in readable if is_backfill(d.key)]
    judged = {d.key: _Judged(d) for d in readable}
    successor = {
        _trail_path(d.digest.previousDigestS3Object): d for d in chain if d.digest and d.digest.previousDigestS3Object
    }
    for read in [*chain, *backfill]:
        _judge_digest(judged[read.key], successor.get(_trail_path(read.key)), keys)
    rows = [_digest_row(trail, judged[d.key]) for d in [*chain, *backfill]]
    rows += [_unreadable_row(trail, d) for d in trail.digests if d.digest is None]
    rows += list(_chain_breaks(trail, chain))
    rows += list(_log_rows(trail, [*chain, *backfill], judged))
    return [row for row in rows if _reported(trail, row.period_start)]


def _reported(trail: TrailInput, when: dt.datetime) -> bool:
    return (trail.report_from is None or when >= trail.report_from) and (
        trail.report_until is None or when < trail.report_until
    )


def _judge_digest(judged: _Judged, next_digest: ReadDigest | None, keys: PublicKeys) -> None:
    read, digest = judged.read, judged.read.digest
    assert digest is not None and read.sha256 is not None
    if read.problem is not None:
        judged.fail(MODIFIED, read.problem)
    if next_digest is not None and next_digest.digest is not None:
        following = next_digest.digest
        signature, algorithm = following.previousDigestSignature, following.digestSignatureAlgorithm
        judged.expected = following.previousDigestHashValue
        if following.previousDigestHashValue != read.sha256:
            judged.fail(MODIFIED, f"its SHA-256 is not the one the next digest {_basename(next_digest.key)} states")
    else:
        signature, algorithm = read.signature, read.algorithm
    if signature is None:
        judged.fail(
            UNSIGNED,
            "no signature: no later digest states it (the next one is missing, or this is the "
            "newest) and its x-amz-meta-signature metadata (a folder: the .metadata.json sidecar) is absent",
        )
    else:
        problem = keys.check(
            digest.digestPublicKeyFingerprint, algorithm or "", signature, signed_message(digest, read.sha256)
        )
        if problem is not None:
            judged.fail(MODIFIED, problem)
    if _trail_path(digest.digestS3Object) != _trail_path(read.key):
        judged.fail(MOVED, f"it was delivered as {digest.digestS3Object} but is stored at {read.key}")


def _digest_row(trail: TrailInput, judged: _Judged) -> IntegrityRow:
    read, digest = judged.read, judged.read.digest
    assert digest is not None
    return IntegrityRow(
        DIGEST,
        judged.status,
        trail.account,
        trail.region,
        read.key,
        bucket_start(digest.start, HOUR),
        None,
        "; ".join(judged.reasons) or None,
        judged.expected,
        read.sha256,
        trail.checked_at,
    )


def _unreadable_row(trail: TrailInput, read: ReadDigest) -> IntegrityRow:
    end = key_time(read.key) or trail.report_from or EPOCH
    return IntegrityRow(
        DIGEST,
        MODIFIED,
        trail.account,
        trail.region,
        read.key,
        bucket_start(end - HOUR, HOUR),
        None,
        read.problem or "unreadable",
        None,
        read.sha256,
        trail.checked_at,
    )


def _missing_hours(
    trail: TrailInput, start: dt.datetime, end: dt.datetime, known: str | None, why: str
) -> Iterator[IntegrityRow]:
    """A missing-digest row for each hour of [start, end); the last one is named `known` when its key is."""
    hours = max(1, round((end - start) / HOUR))
    for index in range(hours):
        hour = bucket_start(start + index * HOUR + HOUR / 2, HOUR)  # digests end a little past the hour
        name = known if index == hours - 1 and known else ""
        yield IntegrityRow(
            DIGEST,
            MISSING,
            trail.account,
            trail.region,
            name or "",
            hour,
            None,
            f"{why} ({hours} digest{'s' if hours > 1 else ''} missing in a row)",
            None,
            None,
            trail.checked_at,
        )


def _chain_breaks(trail: TrailInput, chain: Sequence[ReadDigest]) -> Iterator[IntegrityRow]:
    present = {_trail_path(d.key) for d in chain}
    earlier: DigestFile | None = None
    for read in chain:
        digest = read.digest
        assert digest is not None
        wanted = digest.previousDigestS3Object
        if earlier is None:
            # The first digest read: its predecessor is before what was listed, unless the report starts earlier.
            if wanted and trail.report_from is not None and digest.start - _SLACK > trail.report_from:
                yield from _missing_hours(
                    trail, trail.report_from, digest.start, wanted, f"the chain's previous digest {wanted} is missing"
                )
        elif wanted is None:
            if digest.start - earlier.end > _SLACK:
                yield from _missing_hours(
                    trail,
                    earlier.end,
                    digest.start,
                    None,
                    f"no digest between {iso(earlier.end)} and {iso(digest.start)}: a gap "
                    "(logging or log file validation was off; a new chain starts here)",
                )
        elif _trail_path(wanted) not in present:
            yield from _missing_hours(
                trail,
                earlier.end,
                digest.start,
                wanted,
                f"deleted from the chain: {_basename(read.key)} names {_basename(wanted)}, which is not in the bucket",
            )
        elif digest.start - earlier.end > _SLACK:
            yield from _missing_hours(
                trail, earlier.end, digest.start, None, f"no digest between {iso(earlier.end)} and {iso(digest.start)}"
            )
        earlier = digest
    if earlier is not None and trail.expect_until is not None and trail.expect_until - earlier.end > HOUR:
        yield from _missing_hours(
            trail,
            earlier.end,
            trail.expect_until - HOUR,
            None,
            f"no digest after {iso(earlier.end)}: logging stopped, or the newest digests were deleted",
        )


def _log_rows(
    trail: TrailInput, digests: Sequence[ReadDigest], judged: Mapping[str, _Judged]
) -> Iterator[IntegrityRow]:
    listed: set[str] = set()
    by_name = {_basename(key): key for key in trail.logs}
    for read in digests:
        assert read.digest is not None
        digest_status = judged[read.key].status
        for entry in read.digest.logFiles:
            key = _present_key(entry.s3Object, trail.logs)
            listed.add(key or entry.s3Object)
            when = bucket_start(key_time(entry.s3Object) or read.digest.start, dt.timedelta(minutes=5))
            status, reason, actual = _log_status(
                trail, entry.s3Object, entry.hashValue, key, by_name, read.key, digest_status
            )
            if status == MOVED:
                listed.add(by_name[_basename(entry.s3Object)])
            yield IntegrityRow(
                LOG,
                status,
                trail.account,
                trail.region,
                key or entry.s3Object,
                when,
                read.key,
                reason,
                entry.hashValue,
                actual,
                trail.checked_at,
            )
    for key in trail.logs:
        if key not in listed:
            when = bucket_start(key_time(key) or EPOCH, dt.timedelta(minutes=5))
            found = trail.logs[key]
            yield IntegrityRow(
                LOG,
                NOT_COVERED,
                trail.account,
                trail.region,
                key,
                when,
                None,
                "no digest lists this log file (added to the bucket, or its digest was deleted)",
                None,
                found.sha256 if found else None,
                trail.checked_at,
            )


def _present_key(s3_object: str, logs: Mapping[str, LogHash | None]) -> str | None:
    """The listed key of a log a digest names (a local folder's keys are relative to the trail root)."""
    if s3_object in logs:
        return s3_object
    tail = _trail_path(s3_object)
    return tail if tail in logs else None


def _log_status(
    trail: TrailInput,
    s3_object: str,
    expected: str,
    key: str | None,
    by_name: Mapping[str, str],
    digest_key: str,
    digest_status: str,
) -> tuple[str, str | None, str | None]:
    if key is None:
        elsewhere = by_name.get(_basename(s3_object))
        found = trail.logs.get(elsewhere) if elsewhere else None
        if found is not None and found.sha256 == expected:
            return MOVED, f"listed by {_basename(digest_key)} at {s3_object}, found at {elsewhere}", found.sha256
        return MISSING, f"listed by {_basename(digest_key)}, not in the bucket (deleted)", None
    found = trail.logs[key]
    if found is None:
        return UNSIGNED, "not read (outside the period verified)", None
    if found.problem is not None:
        return MODIFIED, found.problem, None
    if found.sha256 != expected:
        return MODIFIED, "its SHA-256 is not the one its digest states (the content was changed)", found.sha256
    if found.trailing:
        return MODIFIED, f"{found.trailing} bytes after the gzip member (appended data)", found.sha256
    if digest_status != VALID:
        return UNSIGNED, f"the hash matches, but its digest {_basename(digest_key)} is {digest_status}", found.sha256
    return VALID, None, found.sha256
