"""The names table in the lake, `<lake>/names/names.parquet`: one row per (kind, id, name) and the time it held.

Each source (`trail`, `aws`, `csv`) replaces only its own rows, and the file is replaced atomically (written
beside it, then renamed), so a reader sees the old table or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

KINDS: tuple[str, ...] = ("key", "account", "secret")
SOURCES: tuple[str, ...] = ("trail", "aws", "csv")
NAMES_FILE = Path("names") / "names.parquet"
NAMES_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # key | account | secret
        pa.field("id", pa.string(), nullable=False),  # key ARN (or bare key id), account id, secret ARN
        pa.field("name", pa.string(), nullable=False),  # alias/..., the account's name, the secret's name
        pa.field("valid_from", pa.timestamp("us", tz="UTC")),  # null: as far back as known
        pa.field("valid_until", pa.timestamp("us", tz="UTC")),  # null: still holds
        pa.field("source", pa.string(), nullable=False),  # trail | aws | csv
    ]
)


@dataclass(frozen=True)
class NameRow:
    kind: str
    id: str
    name: str
    source: str
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None


def names_path(lake: Path) -> Path:
    return Path(lake) / NAMES_FILE


def read(lake: Path) -> list[NameRow]:
    """Every row of the lake's names table (none when there is no table yet)."""
    path = names_path(lake)
    if not path.is_file():
        return []
    table = pq.read_table(path, schema=NAMES_SCHEMA)
    return [NameRow(**row) for row in table.to_pylist()]


def replace_source(lake: Path, source: str, rows: Iterable[NameRow]) -> int:
    """Replace the rows of `source` with `rows` (other sources' rows stay); returns the rows written for it."""
    if source not in SOURCES:
        raise ValueError(f"unknown names source {source!r}: one of {', '.join(SOURCES)}")
    fresh = [NameRow(r.kind, r.id, r.name, source, r.valid_from, r.valid_until) for r in rows]
    kept = [row for row in read(lake) if row.source != source]
    everything = sorted({*kept, *fresh}, key=lambda r: (r.kind, r.id, r.source, r.valid_from or _EPOCH, r.name))
    path = names_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique per writer, thread or process
    columns = {name: [getattr(row, name) for row in everything] for name in NAMES_SCHEMA.names}
    pq.write_table(pa.table(columns, schema=NAMES_SCHEMA), staging)
    os.replace(staging, path)
    return len(set(fresh))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
