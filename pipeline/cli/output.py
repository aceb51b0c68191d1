"""Query results on the terminal or in a file: a rich table, CSV, JSON lines or Parquet (`--format`, `--output`).

Table cells show trail values through `safe_text.terminal`; JSON lines escape hidden characters (the decoded
values are the exact ones); CSV and Parquet hold the values verbatim: they are data files, not terminal text.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.table import Table

from pipeline import safe_text
from pipeline.cli.common import make_console
from pipeline.times import iso

FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")
TABLE_MAX_ROWS = 500  # a terminal is not the place for more: the note points to --format csv --output


def write_result(table: pa.Table, fmt: str, output: Path | None, *, title: str) -> None:
    """Print or write `table` as a rich table, CSV, JSON lines or Parquet."""
    if fmt == "parquet":
        assert output is not None
        pq.write_table(table, output, compression="zstd")
    elif fmt == "table":
        console = make_console(file=output.open("w") if output else None, width=200 if output else None)
        console.print(_rich_table(table, title))
        if table.num_rows > TABLE_MAX_ROWS:
            console.print(f"… {table.num_rows - TABLE_MAX_ROWS} more rows: use --format csv --output FILE")
    else:
        text = _csv(table) if fmt == "csv" else _json_lines(table)
        if output:
            output.write_text(text)
        else:
            typer.echo(text, nl=False)
    if output:
        make_console(stderr=True).print(f"{table.num_rows} rows written to {safe_text.markup(output)}")


def _rich_table(table: pa.Table, title: str) -> Table:
    view = Table(title=safe_text.terminal(f"{title} ({table.num_rows} rows)"))
    for name in table.column_names:
        view.add_column(safe_text.terminal(name), overflow="fold")
    for row in table.slice(0, TABLE_MAX_ROWS).to_pylist():
        view.add_row(*(safe_text.terminal(_cell(value)) for value in row.values()))
    return view


def _cell(value: Any) -> str:
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, list):
        return ", ".join(_cell(item) for item in plain)
    if isinstance(plain, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in plain.items())
    return str(plain)


def _plain(value: Any) -> Any:
    """Arrow Python values -> JSON-ready ones: ISO times, maps (lists of pairs) as dicts."""
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _json_lines(table: pa.Table) -> str:
    return "".join(
        safe_text.json_text(msgspec.json.encode({k: _plain(v) for k, v in row.items()}).decode()) + "\n"
        for row in table.to_pylist()
    )


def _csv(table: pa.Table) -> str:
    # CSV has no nested types: lists, maps and structs become JSON text.
    columns: list[pa.Array | pa.ChunkedArray] = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            columns.append(
                pa.array(
                    [None if v is None else msgspec.json.encode(_plain(v)).decode() for v in column.to_pylist()],
                    type=pa.string(),
                )
            )
        else:
            columns.append(column)
    buffer = io.BytesIO()
    pacsv.write_csv(pa.table(columns, names=table.column_names), buffer)
    return buffer.getvalue().decode()
