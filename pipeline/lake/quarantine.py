"""Quarantine: unreadable source objects kept verbatim with their reason, and rejected records as JSON lines.

A key is attacker-controlled text (any length, `..`, separators, control characters), so it never becomes a
path: an entry's file name is a digest of the object plus a sanitised, truncated part of the key's last segment
for people to recognise it (`[A-Za-z0-9._~-]` only, so always inside `quarantine/<kind>/`), and every file the
quarantine keeps has a name of at most 120 bytes. The original source and key are
in the entry's `.reason.json` (objects) or on each line (records).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import msgspec

from pipeline.events import RejectedRecord
from pipeline.lake.layout import quarantine_dir
from pipeline.lake.ledger import ObjectEntry, write_atomic

_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")
# The readable part: with the digest (16), '-' and the longest suffix (".reason.json", 12), a name stays within
# 119 bytes (write_atomic's short-lived temporary name adds 14): far from NAME_MAX (255). Real CloudTrail file
# names (at most ~80 characters) are kept whole.
_READABLE_MAX = 90
_TAIL = 12  # a truncated part keeps the end of the name too (".json.gz", the file's unique suffix)


def _readable(key: str) -> str:
    """The key's last segment with everything but [A-Za-z0-9._~-] replaced, truncated in the middle."""
    text = _UNSAFE.sub("_", key.rsplit("/", 1)[-1])
    if len(text) > _READABLE_MAX:
        text = f"{text[: _READABLE_MAX - _TAIL - 1]}~{text[-_TAIL:]}"
    return text


def _quarantine_name(entry: ObjectEntry, content: bytes) -> str:
    # Named by object and content, not etag: re-reading a still-bad object (even one re-uploaded or touched)
    # overwrites its entry instead of adding another. The digest comes first: no name starts with '.'.
    key = entry.key.encode("utf-8", "backslashreplace")
    digest = hashlib.sha256(entry.bucket.encode("utf-8", "backslashreplace") + b"\0" + key + b"\0")
    digest.update(hashlib.sha256(content).digest())
    readable = _readable(entry.key)
    return f"{digest.hexdigest()[:16]}-{readable}" if readable else digest.hexdigest()[:16]


def quarantine_object(lake: Path, entry: ObjectEntry, source: str, data: bytes | None) -> Path:
    """Keep an unreadable object verbatim beside a JSON file with the reason. `data` None: its bytes were not
    read (a refused or unreadable file), only the reason is kept. Returns the path of the bytes, or of the
    reason when there are none."""
    folder = quarantine_dir(lake) / "objects"
    path = folder / _quarantine_name(entry, data if data is not None else b"")
    reason_path = path.with_name(path.name + ".reason.json")
    if data is not None:
        write_atomic(path, data)
    reason = {"source": source, **msgspec.to_builtins(entry)}
    write_atomic(reason_path, msgspec.json.encode(reason))
    return path if data is not None else reason_path


def quarantine_records(lake: Path, entry: ObjectEntry, source: str, rejected: Sequence[RejectedRecord]) -> Path:
    """Keep the rejected records of an object as JSON lines (reason + the record's verbatim JSON text)."""
    name = _quarantine_name(entry, b"\n".join(r.raw for r in rejected))
    path = quarantine_dir(lake) / "records" / f"{name}.jsonl"
    lines = [
        msgspec.json.encode(
            {
                "source": source,
                "bucket": entry.bucket,
                "key": entry.key,
                "etag": entry.etag,
                "index": r.index,
                "reason": r.reason,
                "record": r.raw.decode("utf-8", "replace"),
            }
        )
        for r in rejected
    ]
    write_atomic(path, b"\n".join(lines) + b"\n")
    return path
