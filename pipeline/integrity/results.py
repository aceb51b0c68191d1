"""What a verification finds, one row per digest and per log file: the rows of the lake's `integrity/` table.

kind            digest | log
status          valid | modified | missing | moved | unsigned | not covered
account_id, region
object          the digest or log object's key ('' for an hour whose digest is missing under an unknown name)
period_start    the hour the object covers (a digest's start, a log file's 5-minute window), UTC
period_date     its day (the table's partition)
digest_object   for a log file: the digest that lists it (null: none does)
reason          why the status is what it is, in words (null for valid)
expected_sha256 the hash the (next) digest states for the object
actual_sha256   the hash of what is stored now
checked_at      when the verification ran
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass

import pyarrow as pa

from pipeline.lake.integrity import INTEGRITY_SCHEMA

VALID = "valid"
MODIFIED = "modified"
MISSING = "missing"
MOVED = "moved"
UNSIGNED = "unsigned"
NOT_COVERED = "not covered"
STATUSES = (VALID, MODIFIED, MISSING, MOVED, UNSIGNED, NOT_COVERED)
DIGEST = "digest"
LOG = "log"


@dataclass(frozen=True)
class IntegrityRow:
    kind: str
    status: str
    account_id: str
    region: str
    object: str
    period_start: dt.datetime
    digest_object: str | None = None
    reason: str | None = None
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    checked_at: dt.datetime | None = None

    @property
    def problem(self) -> bool:
        return self.status != VALID


def to_table(rows: Iterable[IntegrityRow]) -> pa.Table:
    columns = list(zip(*((*astuple(row), row.period_start.date()) for row in rows), strict=True)) or [
        [] for _ in INTEGRITY_SCHEMA
    ]
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, INTEGRITY_SCHEMA, strict=True)], schema=INTEGRITY_SCHEMA
    )


@dataclass(frozen=True)
class Coverage:
    """How many of the period's log files verified (valid) out of all the log files known for it."""

    verified: int
    total: int

    @classmethod
    def of(cls, rows: Sequence[IntegrityRow]) -> Coverage:
        logs = [row for row in rows if row.kind == LOG]
        return cls(sum(row.status == VALID for row in logs), len(logs))

    def line(self) -> str:
        return f"{self.verified:,} of {self.total:,} log files verified for this period"


def status_counts(rows: Iterable[IntegrityRow]) -> Counter[tuple[str, str]]:
    """(kind, status) -> rows."""
    return Counter((row.kind, row.status) for row in rows)
