"""The lake's `integrity/` table: what `keytrail verify` found, per digest and per log file, committed through
the same protocol as events (staging, intent, renames, ledger record; `recover` rolls back a crash).

    integrity/period_date=YYYY-MM-DD/<account>_<region>_<batch>.parquet

One file per account/region/day per verification; a later verification of the same account/region/day
supersedes the earlier file in the same commit, so readers see the latest verdict once, never two.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.lake.ledger import (
    BatchRecord,
    Checkpoint,
    FileEntry,
    _hidden_files,
    claim_staging,
    lake_lock,
    new_batch_id,
    publish,
    recover_locked,
    remove_staging,
)
from pipeline.times import iso, parse_timestamp

_PARTITION = "period_date="
# The table's columns (documented in pipeline/integrity/results.py); period_date is the partition.
INTEGRITY_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("object", pa.string(), nullable=False),
        pa.field("period_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("digest_object", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("expected_sha256", pa.string()),
        pa.field("actual_sha256", pa.string()),
        pa.field("checked_at", pa.timestamp("us", tz="UTC")),
        pa.field("period_date", pa.date32(), nullable=False),
    ]
)

_SAFE = re.compile(r"[^A-Za-z0-9-]")


def integrity_dir(lake: Path) -> Path:
    return Path(lake) / "integrity"


def _day_dir(lake: Path, day: dt.date) -> Path:
    return integrity_dir(lake) / f"{_PARTITION}{day.isoformat()}"


def _prefix(account: str, region: str) -> str:
    return f"{_SAFE.sub('_', account)}_{_SAFE.sub('_', region)}_"


def write_integrity(
    lake: Path, table: pa.Table, now: dt.datetime | None, checkpoint: Checkpoint | None = None
) -> BatchRecord | None:
    """Commit `table` (rows with `period_date`, `account_id`, `region`) as one batch; None when it is empty."""
    if table.num_rows == 0:
        return None
    lake = Path(lake)
    batch_id = new_batch_id(now)
    columns = (table.column(name).to_pylist() for name in ("period_date", "account_id", "region"))
    keys = sorted(set(zip(*columns, strict=True)))
    with lake_lock(lake):
        recover_locked(lake)
        staging, handle = claim_staging(lake, batch_id)
        try:
            hidden = _hidden_files(lake)
            moves: list[tuple[Path, Path]] = []
            files: list[FileEntry] = []
            superseded: list[str] = []
            for day, account, region in keys:
                mask = pc.and_(
                    pc.and_(pc.equal(table["period_date"], day), pc.equal(table["account_id"], account)),
                    pc.equal(table["region"], region),
                )
                part = table.filter(mask)
                name = f"{_prefix(account, region)}{batch_id}.parquet"
                staged = staging / f"{day.isoformat()}-{name}"
                pq.write_table(part.drop_columns(["period_date"]), staged, compression="zstd")
                target = _day_dir(lake, day) / name
                moves.append((staged, target))
                files.append(FileEntry(str(target.relative_to(lake)), part.num_rows))
                folder = _day_dir(lake, day)
                old = sorted(folder.glob(f"{_prefix(account, region)}*.parquet")) if folder.is_dir() else []
                superseded += [str(p.relative_to(lake)) for p in old if p not in hidden]
            record = BatchRecord(batch_id, "integrity", iso(now) if now else None, files=files, superseded=superseded)
            publish(lake, record, moves, checkpoint)
        finally:
            handle.close()
            remove_staging(staging)
    return record


def integrity_files(lake: Path, start: dt.date | None = None, end: dt.date | None = None) -> list[Path]:
    """The committed integrity files of the days in [start, end] (None = unbounded), sorted."""
    root = integrity_dir(lake)
    if not root.is_dir():
        return []
    hidden = _hidden_files(Path(lake))
    found: list[Path] = []
    for folder in sorted(root.glob(f"{_PARTITION}*")):
        try:
            day = dt.date.fromisoformat(folder.name[len(_PARTITION) :])
        except ValueError:
            continue
        if (start is None or day >= start) and (end is None or day <= end):
            found.extend(p for p in sorted(folder.glob("*.parquet")) if p not in hidden)
    return [p for p in found if p not in _hidden_files(Path(lake))]


def integrity_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows given as mappings (YAML cases) as an INTEGRITY_SCHEMA table; period_date follows period_start."""
    columns: dict[str, list[Any]] = {name: [] for name in INTEGRITY_SCHEMA.names}
    for row in rows:
        unknown = sorted(set(row) - set(columns) - {"period_date"})
        if unknown:
            raise ValueError(f"unknown integrity column(s) {', '.join(unknown)}; known: {', '.join(columns)}")
        for name in columns:
            columns[name].append(row.get(name))
    columns["period_start"] = [parse_timestamp(v) if isinstance(v, str) else v for v in columns["period_start"]]
    columns["checked_at"] = [parse_timestamp(v) if isinstance(v, str) else v for v in columns["checked_at"]]
    columns["period_date"] = [v.date() if v is not None else None for v in columns["period_start"]]
    return pa.Table.from_pydict(columns, schema=INTEGRITY_SCHEMA)
