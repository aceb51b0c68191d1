"""SHA-256 of a log object's uncompressed bytes, computed while the object streams in (read once).

CloudTrail hashes the uncompressed log file. A `.json.gz` object is one gzip member: anything after that member
(a second member, or plain appended bytes) is not part of what CloudTrail delivered, so it is a modification,
even though `gunzip` and most readers would happily decode it (the hole aws-cli PR #10324 closes). Ingest holds
an object's stored bytes anyway: `hash_stored` lets it hash them in the same read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from isal import isal_zlib

_GZIP_WBITS = 31  # gzip header and trailer, one member


@dataclass(frozen=True)
class LogHash:
    """The hash of the uncompressed content, or why there is none (corrupt gzip), and anything after the
    first gzip member (`trailing` bytes)."""

    sha256: str | None
    trailing: int = 0
    problem: str | None = None


class LogHasher:
    """Feed stored (compressed) chunks in order; `result()` hashes the first gzip member's content."""

    def __init__(self, gzipped: bool = True) -> None:
        self._hash = hashlib.sha256()
        self._inflate = isal_zlib.decompressobj(wbits=_GZIP_WBITS) if gzipped else None
        self._trailing = 0
        self._problem: str | None = None
        self._started = False

    def feed(self, chunk: bytes) -> None:
        if self._problem is not None or not chunk:
            return
        if self._inflate is None:
            self._hash.update(chunk)
            return
        if not self._started and chunk[:2] != b"\x1f\x8b":
            self._problem = "not gzip: the object's bytes do not start with a gzip header"
            return
        self._started = True
        if self._inflate.eof:
            self._trailing += len(chunk)
            return
        try:
            self._hash.update(self._inflate.decompress(chunk))
        except isal_zlib.error as exc:
            self._problem = f"corrupt gzip: {exc}"
            return
        if self._inflate.eof:
            self._trailing += len(self._inflate.unused_data)

    def result(self) -> LogHash:
        if self._problem is None and self._inflate is not None and not self._inflate.eof:
            self._problem = "corrupt gzip: the object ends inside its gzip member (truncated)"
        if self._problem is not None:
            return LogHash(None, self._trailing, self._problem)
        return LogHash(self._hash.hexdigest(), self._trailing)


def hash_chunks(chunks: Iterable[bytes], gzipped: bool = True) -> LogHash:
    hasher = LogHasher(gzipped)
    for chunk in chunks:
        hasher.feed(chunk)
    return hasher.result()


def hash_stored(data: bytes, key: str = ".json.gz") -> LogHash:
    """The hash of one object's stored bytes already in memory (ingest's read); plain JSON is hashed as is."""
    return hash_chunks((data,), gzipped=key.endswith(".gz"))
