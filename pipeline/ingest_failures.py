"""The ingest failure model: what bad input and broken machinery do to a run, decided here and nowhere else.

keytrail is a security monitor: one hostile object in a trail must never stop ingest (the pipeline would go
blind), and nothing may vanish silently. Everything that can go wrong while ingesting falls in one of three
kinds:

**A bad record** — one element of a log's `Records` array that cannot become a row: a field of the wrong type
(`userIdentity: "x"`), invalid UTF-8 in a string, nesting deeper than the decoder can follow, an eventTime
that is not a time, something that is not an object. It is kept under `quarantine/records/` with its reason,
counted in the report and the ledger (`events_rejected`); the rest of the object is kept. A record too broken
to tell its service (no readable `eventSource`) is rejected too: it could be a KMS event.

**A bad object** — a source object that cannot be read as a CloudTrail log at all: empty, corrupt or truncated
gzip, gzip that inflates past `ingest_workers.MAX_LOG_BYTES` (a bomb), not JSON, no `Records` array or not a list,
or one the listing refuses to read (a symlink leading out of its trail, something that is not a regular file such
as a FIFO, a file name that is not UTF-8), or one whose read fails for a reason that belongs to that file alone
(`OBJECT_ERRNOS`: it vanished, a dangling or looping symlink, permission denied, a directory). It is kept under
`quarantine/objects/` — verbatim when its bytes were read, by name with its reason otherwise (a refused object's
target is never read, so never copied) — recorded in the ledger as quarantined, counted, and the run goes on. A
rerun skips it like any ingested object; once fixed, touching (or re-uploading) it gives it a new identity and the
next run reads it again.

**A fault of the run** — the lake cannot be written (not writable, disk full, not a folder), the source cannot
be listed or read for a reason that is not about one file (an I/O error, a mount or network gone, out of file
descriptors), or the S3 client fails (credentials, bucket, network: botocore errors, which the CLI turns into
its own messages). The run stops with `RunFault`: one line naming the path and what to do. Batches committed
before stay (each is whole); nothing of the batch in progress is committed, so a rerun after the fix resumes
exactly. An errno not known to be about one file counts as a run fault: stopping loses nothing, whereas a
quarantine is a verdict the ledger keeps.

Not data, never caught here: `MemoryError`, `KeyboardInterrupt`/`SystemExit`, and programming errors
(`AttributeError`, `KeyError`, ...). They propagate and fail the run loudly.

Who applies it: `events.rows_from_log` rejects records with `RECORD_ERRORS`; `ingest_workers.read_object`
(the same function in this process and in worker processes, so an exception never reaches the pool) turns an
object's exception into a quarantine reason with `object_fault`; `ingest` wraps lake writes in `writing_lake`
and the listing in `reading_source`; the CLI prints a `RunFault` as one line and exits 1.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

import msgspec

# What a decoder raises for bad bytes: msgspec's DecodeError (ValidationError is one), UnicodeDecodeError
# (msgspec checks UTF-8 only in the strings it decodes as str, and raises this rather than a DecodeError),
# RecursionError (nesting deeper than the interpreter's recursion limit: msgspec recurses per level).
DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
# What normalizing one decoded record can raise for its data: the promotion helpers meet shapes CloudTrail
# never writes (ValueError covers UnicodeError).
RECORD_ERRORS: tuple[type[Exception], ...] = (*DECODE_ERRORS, TypeError, ValueError)

# Errnos of reading ONE source file that describe that file, not the machine: the object is bad, the run goes
# on. Anything else (EIO, EMFILE, ENOMEM, ESTALE, ENOTCONN, ...) stops the run.
OBJECT_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ENOENT,  # vanished since the listing, or a dangling symlink
        errno.EACCES,
        errno.EPERM,
        errno.ELOOP,  # a symlink loop
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ENAMETOOLONG,
        errno.ENXIO,  # a device or socket without a reader behind it
        errno.ENODEV,
        errno.EINVAL,
    }
)


class BadObject(ValueError):
    """One source object cannot be ingested; the message says why. It is quarantined and the run goes on."""


class LogFormatError(BadObject):
    """The object's bytes are not a CloudTrail log file (empty, corrupt gzip, not JSON, no `Records` array)."""


class RefusedObject(BadObject):
    """The object must not be read: a symlink out of its trail, not a regular file, a name that is not UTF-8."""


class RunFault(Exception):
    """The run cannot go on (lake not writable, disk full, source unreadable). The message is one line naming
    the path and what to do; nothing of the batch in progress was committed."""


def _errno_text(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    text = exc.strerror or str(exc)
    return f"{name} ({text})" if name else text


def record_fault(exc: Exception) -> str:
    """The reason a record is rejected for `exc` (one of RECORD_ERRORS)."""
    if isinstance(exc, RecursionError):
        return "nested deeper than the decoder can follow"
    if isinstance(exc, UnicodeError):
        return f"invalid UTF-8: {exc}"
    return str(exc)


def object_fault(exc: Exception, source: str) -> str:
    """The reason one object is quarantined for, when `exc` (raised while reading or decoding it) is about that
    object. Raises `RunFault` when it is a fault of the run, and re-raises `exc` when it is not data at all (a
    bug, MemoryError, an S3 client error the caller reports)."""
    if isinstance(exc, BadObject):
        return str(exc)
    if isinstance(exc, DECODE_ERRORS):
        return f"cannot decode: {record_fault(exc)}"
    if isinstance(exc, OSError) and exc.errno in OBJECT_ERRNOS:
        return f"cannot read: {_errno_text(exc)}"
    if isinstance(exc, OSError):
        raise source_fault(exc, source) from exc
    raise exc


def source_fault(exc: OSError, path: str) -> RunFault:
    """The run fault of a source that cannot be listed or read."""
    return RunFault(
        f"cannot read the source at {path}: {_errno_text(exc)}: check that it is mounted and readable by this "
        "user (if only this file is affected, move it aside), then rerun; the batch in progress was not committed"
    )


_LAKE_HINTS = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (disk quota exceeded)",
    errno.EACCES: "make it writable by this user",
    errno.EPERM: "make it writable by this user",
    errno.EROFS: "use a lake on a writable filesystem",
    errno.ENOTDIR: "point ingest at a folder (or a path that does not exist yet)",
    errno.EEXIST: "point ingest at a folder (or a path that does not exist yet)",
}


def lake_fault(exc: OSError, lake: Path) -> RunFault:
    """The run fault of a lake that cannot be written."""
    hint = _LAKE_HINTS.get(exc.errno or 0, "check the lake folder")
    where = f" ({exc.filename})" if exc.filename else ""
    return RunFault(
        f"cannot write the lake {lake}: {_errno_text(exc)}{where}: {hint}, then rerun; "
        "the batch in progress was not committed"
    )


@contextlib.contextmanager
def writing_lake(lake: Path) -> Iterator[None]:
    """Any OSError inside is a fault of the run: the lake cannot be written (or read back)."""
    try:
        yield
    except OSError as exc:
        raise lake_fault(exc, lake) from exc


@contextlib.contextmanager
def reading_source(source: str) -> Iterator[None]:
    """Any OSError inside (listing the source) is a fault of the run: the source cannot be read."""
    try:
        yield
    except OSError as exc:
        raise source_fault(exc, exc.filename or source) from exc
