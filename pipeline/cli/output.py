"""Query results on the terminal or in a file: a rich table, CSV, JSON lines or Parquet (`--format`, `--output`).

The table is `tables.print_table` (fitted to the terminal, plain when piped, `--full` for whole values); times
show as `2026-12-05 08:08:21Z`. JSON lines escape hidden characters (the decoded
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

from pipeline import safe_text
from pipeline.cli import tables
from pipeline.cli.common import make_console
from pipeline.times import display, iso

FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")
TABLE_MAX_ROWS = 500  # a terminal is not the place for more: the note points to --format csv --output


def write_result(table: pa.Table, fmt: str, output: Path | None, *, title: str, full: bool = False) -> None:
    """Print or write `table` as a rich table, CSV, JSON lines or Parquet."""
    if fmt == "parquet":
        assert output is not None
        pq.write_table(table, output, compression="zstd")
    elif fmt == "table":
        # A file gets the plain (piped) form: full values, no colours, no box drawing.
        console = make_console(file=output.open("w") if output else None)
        tables.emit(listing(table, title), "table", full=full, console=console)
    else:
        text = _csv(table) if fmt == "csv" else _json_lines(table)
        if output:
            output.write_text(text)
        else:
            typer.echo(text, nl=False)
    if output:
        make_console(stderr=True).print(f"{table.num_rows} rows written to {safe_text.markup(output)}")


def listing(table: pa.Table, title: str) -> tables.Listing:
    """An Arrow result as a listing: times for people, ids/ARNs shortened in the middle, long text last to go."""
    rows = [[_cell(value) for value in row.values()] for row in table.slice(0, TABLE_MAX_ROWS).to_pylist()]
    columns = tuple(
        _column(name, table.schema.field(name).type, [row[i] for row in rows], i)
        for i, name in enumerate(table.column_names)
    )
    notes = ()
    if table.num_rows > TABLE_MAX_ROWS:
        notes = (f"… {table.num_rows - TABLE_MAX_ROWS} more rows: use --format csv --output FILE",)
    return tables.Listing(f"{title} ({table.num_rows} rows)", columns, rows, notes=notes)


def _column(name: str, type_: pa.DataType, values: list[str], position: int) -> tables.Column:
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return tables.Column(name, "time", priority=position)
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return tables.Column(name, "number", priority=position)
    if name.endswith(("_arn", "_id", "_ids")) or any(v.startswith("arn:") for v in values):
        return tables.Column(name, "id", priority=position)
    longest = max((len(v) for v in values), default=0)
    # Free text (error messages, user agents) gives way before the short columns that say who and what.
    return tables.Column(name, "text", priority=position + (100 if longest > 40 else 0))


def _cell(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return display(value)
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
