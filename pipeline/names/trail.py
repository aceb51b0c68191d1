"""Names from what the trail says (queries/names/trail_names.sql): KMS aliases over time and secret names."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from pipeline.engine import Engine, readable_partitions
from pipeline.names.table import NameRow, replace_source
from pipeline.sql_files import read_sql
from pipeline.times import utc

log = logging.getLogger(__name__)


def trail_rows(lake: Path) -> list[NameRow]:
    """Every name the lake's events record (empty for an empty lake)."""
    days = readable_partitions(Path(lake))
    if not days:
        return []
    since = dt.datetime.combine(min(days), dt.time(), dt.UTC)
    until = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), dt.UTC)
    with Engine.for_lake(lake, since, until) as engine:
        rows = engine.sql(read_sql("names", "trail_names.sql")).to_pylist()
    return [
        NameRow(
            kind=row["kind"],
            id=row["id"],
            name=row["name"],
            source="trail",
            valid_from=utc(row["valid_from"]) if row["valid_from"] else None,
            valid_until=utc(row["valid_until"]) if row["valid_until"] else None,
        )
        for row in rows
    ]


def sync_from_trail(lake: Path) -> int:
    """Rebuild the trail's rows of the names table from the lake's events; returns how many there are."""
    written = replace_source(lake, "trail", trail_rows(lake))
    log.info("names: %d row(s) from the trail", written)
    return written
