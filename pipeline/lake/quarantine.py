"""Quarantine: unreadable source objects kept verbatim with their reason, and rejected records as JSON lines."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import msgspec

from pipeline.events import RejectedRecord
from pipeline.lake.layout import quarantine_dir
from pipeline.lake.ledger import ObjectEntry, write_atomic


def _quarantine_name(entry: ObjectEntry, content: bytes) -> str:
    # Named by object and content, not etag: re-reading a still-bad object (even one re-uploaded or touched)
    # overwrites its entry instead of adding another.
    digest = hashlib.sha256(f"{entry.bucket}\0{entry.key}\0".encode() + hashlib.sha256(content).digest())
    return f"{digest.hexdigest()[:16]}-{entry.key.rsplit('/', 1)[-1]}"


def quarantine_object(lake: Path, entry: ObjectEntry, source: str, data: bytes) -> Path:
    """Keep an unreadable object verbatim beside a JSON file with the reason; returns the object's path."""
    folder = quarantine_dir(lake) / "objects"
    path = folder / _quarantine_name(entry, data)
    write_atomic(path, data)
    reason = {"source": source, **msgspec.to_builtins(entry)}
    write_atomic(path.with_name(path.name + ".reason.json"), msgspec.json.encode(reason))
    return path


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
