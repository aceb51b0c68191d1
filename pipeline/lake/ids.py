"""The lake-wide event_id index: one small Parquet file of (event_id, event_date) per committed batch.

`event_id` is unique across the whole lake, not just per partition: real CloudTrail repeats an eventID only
within one eventTime, but published samples reuse placeholder eventIDs across years, and readers are promised
one row per event_id. The check streams this compact index, not the events.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.lake.layout import ids_dir

# Up to this many committed event_ids are probed in memory; a bigger id index is scanned by DuckDB (already at
# 500k ids that is faster and ~100 MB lighter than hashing them in pyarrow).
_ID_CHUNK = 1 << 17
ID_SCHEMA = pa.schema([pa.field("event_id", pa.string(), nullable=False), pa.field("event_date", pa.date32())])


def _committed_id_files(lake: Path) -> list[Path]:
    folder = ids_dir(lake)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def committed_duplicates(lake: Path, ids: pa.Array) -> set[str]:
    """Which of `ids` are already committed anywhere in the lake. Memory is bounded whatever the lake size."""
    files = _committed_id_files(lake)
    if len(ids) == 0 or not files:
        return set()
    if sum(pq.read_metadata(path).num_rows for path in files) > _ID_CHUNK:
        return _scan_id_index(files, ids)
    values = pa.concat_arrays([pq.read_table(path, columns=["event_id"]).column(0).combine_chunks() for path in files])
    return set(ids.filter(pc.is_in(ids, value_set=values)).to_pylist())


def _scan_id_index(files: list[Path], ids: pa.Array) -> set[str]:
    """`committed_duplicates` for a big id index: DuckDB scans it in parallel against a hash of the new ids.

    Against 30 M committed ids: ~2.3 s and +120 MB per commit, where hashing the index in pyarrow chunks took
    ~12.5 s and +380 MB (and every commit of a backfill pays it)."""
    import duckdb  # only big lakes need it

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "memory_limit": "256MB"})
    try:
        con.register("new_ids", pa.table({"event_id": ids}))
        rows = con.execute(
            "SELECT DISTINCT event_id FROM read_parquet($files) WHERE event_id IN (SELECT event_id FROM new_ids)",
            {"files": [str(path) for path in files]},
        ).fetchall()
    finally:
        con.close()
    return {row[0] for row in rows}


def write_id_index(target: Path, files: Iterable[Path]) -> None:
    """The id index of a batch, read back from its (rewritten) partition files."""
    tables = [pq.read_table(path, columns=["event_id", "event_date"]) for path in files]
    table = pa.concat_tables(tables).cast(ID_SCHEMA) if tables else ID_SCHEMA.empty_table()
    pq.write_table(table, target, compression="zstd")
