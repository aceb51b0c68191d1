"""Where keytrail's SQL files live, and the macros every DuckDB session defines (queries/macros.sql).

The repository's `queries/`, or the copy a wheel ships as `pipeline/_queries`. The catalog (detections,
investigations, analysis), the engine's macros and the lake's rollup queries all read SQL through here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


def queries_dir() -> Path:
    """`queries/` of the repository (or the copy packaged as pipeline/_queries in a wheel)."""
    packaged = Path(__file__).resolve().parent / "_queries"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "queries"


def read_sql(*parts: str) -> str:
    """The text of `queries/<parts...>` (e.g. `read_sql("rollups", "hourly.sql")`)."""
    return queries_dir().joinpath(*parts).read_text()


def _statements(text: str) -> tuple[str, ...]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())


@cache
def macros() -> tuple[str, ...]:
    """The `CREATE MACRO` statements of queries/macros.sql, in order (later ones may use earlier ones)."""
    return _statements(read_sql("macros.sql"))
