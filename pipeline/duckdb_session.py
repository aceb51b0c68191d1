"""A private DuckDB database set up as every keytrail session needs it (the engine's and the lake's rollups').

In memory, never DuckDB's module-level default connection; no extension downloads (none can be fetched here);
times in UTC (hour(), time_bucket, date_trunc follow the session zone); the shared macros of queries/macros.sql
(`caller_arn`, ...); and a private spill directory. DuckDB whitelists its temp directory whatever
`allowed_directories` says, and the default is `.tmp` in the working directory: a session spilling there could
read whatever sits in ./.tmp. A fresh directory (mode 0700, removed on close) keeps spilling to disk possible and
holds nothing but DuckDB's own files.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb

from pipeline.sql_files import macros


def open_session(**config: str) -> tuple[duckdb.DuckDBPyConnection, Path]:
    """A new session and its spill directory (`close_session` removes both). `config`: extra DuckDB settings."""
    spill_dir = Path(tempfile.mkdtemp(prefix="keytrail-duckdb-"))
    settings = {
        "autoinstall_known_extensions": False,
        "temp_directory": str(spill_dir / "spill"),
        "parquet_metadata_cache": True,
        **config,
    }
    con = duckdb.connect(":memory:", config=settings)
    con.execute("SET TimeZone = 'UTC'")
    for macro in macros():
        con.execute(macro)
    return con, spill_dir


def close_session(con: duckdb.DuckDBPyConnection, spill_dir: Path) -> None:
    con.close()
    shutil.rmtree(spill_dir, ignore_errors=True)


@contextlib.contextmanager
def session(**config: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """`open_session` for a `with` block."""
    con, spill_dir = open_session(**config)
    try:
        yield con
    finally:
        close_session(con, spill_dir)
