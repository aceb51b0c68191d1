"""`keytrail query list|show|run` (investigation queries) and `keytrail sql` (ad-hoc SQL in the locked session).

The CLI reads the clock (relative times such as `-24h` are resolved against it) and the lake from --lake or
KEYTRAIL_LAKE. Exit codes: 0 = ran (with or without rows); 1 = the query failed; 2 = bad input.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import duckdb
import pyarrow as pa
import typer
from rich.text import Text

from pipeline import catalog, investigate, lake, query_examples, safe_text, times
from pipeline.cli import tables
from pipeline.cli.common import command_prefix, fail, lake_dir, make_console
from pipeline.cli.output import FORMATS, write_result
from pipeline.cli.tables import FormatOption as RecordFormatOption
from pipeline.cli.tables import FullOption
from pipeline.engine import Engine, QueryRefused, readable_partitions
from pipeline.investigate import InvestigationError

LakeOption = Annotated[
    Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE, else ./keytrail-lake).")
]
FormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="table (fits the terminal; plain when piped), csv, json (one object per line) or parquet.",
    ),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the result to this file (required for parquet).")
]
QueriesOption = Annotated[
    Path | None, typer.Option("--queries", help="Query tree to use instead of the repository's queries/.")
]

query_app = typer.Typer(
    name="query",
    help="Investigation queries: what did a principal do, who used a key or read a secret, what is behind an "
    "alert.\n\nExample: keytrail query run principal_activity --param principal=etl-worker --param since=-24h",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    return fail(make_console(stderr=True), message, code)


def _lake(option: Path | None) -> Path:
    return lake_dir(option)


def _load(queries: Path | None) -> tuple[catalog.Query, ...]:
    try:
        return investigate.load(queries)
    except catalog.CatalogError as exc:
        raise _fail(str(exc)) from None


# --- list / show -------------------------------------------------------------------------------------------------


@query_app.command("list")
def list_command(queries: QueriesOption = None, fmt: RecordFormatOption = "table", full: FullOption = False) -> None:
    """List the investigation queries, with the params each one needs.

    Example: keytrail query list
    """
    tables.check_format(fmt)
    rows = [
        [query.id, query.title, ", ".join(p.name for p in query.params if p.required) or "-"]
        for query in _load(queries)
    ]
    columns = (tables.Column("id", "tag", 0), tables.Column("question", "text", 1), tables.Column("required params"))
    title = "investigations (keytrail query show ID for params and an example)"
    tables.emit(tables.Listing(title, columns, rows), fmt, full=full)


@query_app.command("show")
def show_command(
    query_id: Annotated[str, typer.Argument(help="Investigation id (see keytrail query list).")],
    lake_option: LakeOption = None,
    queries: QueriesOption = None,
) -> None:
    """Show an investigation: what it answers, its params, next steps and a ready-to-copy example.

    When the lake has events, the example uses values from its last day, so it returns rows there.

    Example: keytrail query show key_usage --lake ./demo-lake
    """
    _load(queries)
    try:
        query = investigate.get(query_id, queries)
    except InvestigationError as exc:
        raise _fail(str(exc)) from None
    lake_path = _lake(lake_option)
    console = make_console()
    console.print(f"[bold]{safe_text.markup(query.id)}[/bold]: {safe_text.markup(query.title)}\n")
    console.print(safe_text.markup(query.description, multiline=True) + "\n")
    # One block per param: its help is a sentence, which a table column would cut or wrap mid-word.
    console.print("[bold]params[/bold] (--param name=value)")
    for name, type_, default, help_text in investigate.describe_params(query):
        console.print(
            Text.assemble(("  " + name, "bold"), f"  {type_}", ("  default " + default) if default else ""),
            soft_wrap=True,
        )
        console.print(safe_text.terminal(f"      {help_text}", multiline=True))
    console.print("\n[bold]next steps[/bold]")
    for step in query.next_steps:
        console.print(safe_text.terminal(f"  • {step}"), soft_wrap=True)
    values = _lake_example(query, lake_path)
    where = f"on {lake_path}" if values is not None else "(illustrative values)"
    console.print(f"\n[bold]example[/bold] {safe_text.markup(where)}")
    # Plain print: the command must stay copyable (no wrapping, no markup); its values may come from the lake.
    example = investigate.example_command(query, values, lake_path=lake_path if values is not None else None)
    typer.echo(safe_text.visible(example.replace("keytrail", command_prefix(), 1)))


def _lake_example(query: catalog.Query, lake_path: Path) -> dict[str, Any] | None:
    if not lake.events_dir(lake_path).is_dir():
        return None
    try:
        return query_examples.lake_example(query, lake_path)
    except duckdb.Error:
        return None  # an unreadable lake still gets the YAML example


# --- run / sql ---------------------------------------------------------------------------------------------------


@query_app.command("run")
def run_command(
    query_id: Annotated[str, typer.Argument(help="Investigation id (see keytrail query list).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="name=value (repeatable); see keytrail query show ID.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Same as --param since=... (default -24h).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Same as --param until=... (default now).")] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    full: FullOption = False,
    lake_option: LakeOption = None,
    queries: QueriesOption = None,
) -> None:
    """Run an investigation over the lake. Times are ISO or relative to now (now, -24h, -7d).

    Example: keytrail query run key_usage --param key=alias/orders --param bucket=1h --since -7d --format csv
    """
    now = dt.datetime.now(dt.UTC)  # the only clock read: relative times resolve against it
    _check_format(fmt, output)
    _load(queries)
    lake_path = _lake(lake_option)
    try:
        query = investigate.get(query_id, queries)
        values = investigate.parse_assignments(param or [])
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                if name in values:
                    raise InvestigationError(f"give {name} once: --{name} or --param {name}=..., not both")
                values[name] = value
        investigate.check_lake(lake_path)
        resolved = investigate.resolve(query, values, now=now, lake_path=lake_path)
    except InvestigationError as exc:
        raise _fail(str(exc)) from None
    with make_console(stderr=True).status(f"running {safe_text.markup(query.id)}", spinner="dots"):
        try:
            table = investigate.run(lake_path, resolved)
        except (ValueError, duckdb.Error, pa.ArrowException) as exc:
            raise _fail(f"{query.id} failed: {exc}", code=1) from None
    title = f"{query.id} {times.display(resolved.since)} .. {times.display(resolved.until)}"
    _write(table, fmt, output, title=title, full=full)


def sql_command(
    text: Annotated[str, typer.Argument(help="One read-only SELECT over the `events` view.")],
    since: Annotated[
        str | None, typer.Option("--since", help="Only partitions from this day (ISO or -7d); default: all.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Only partitions before this time; default: all.")
    ] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    full: FullOption = False,
    lake_option: LakeOption = None,
) -> None:
    """Ad-hoc SQL over the lake's `events` view, in a locked session: it reads the lake and nothing else
    (no files, no network, no settings), one read-only statement. Values can bind as $name only from
    investigations; here, write literals. The columns: pipeline/events.py (EVENTS_SCHEMA).

    Example: keytrail sql "SELECT event_name, count(*) AS calls FROM events GROUP BY ALL ORDER BY calls DESC"
    """
    now = dt.datetime.now(dt.UTC)
    _check_format(fmt, output)
    lake_path = _lake(lake_option)
    try:
        investigate.check_lake(lake_path)
        window = _sql_window(lake_path, since, until, now)
    except (InvestigationError, ValueError) as exc:
        raise _fail(str(exc)) from None
    try:
        with Engine.for_lake(lake_path, *window) as engine:
            table = engine.sql(text)
    except duckdb.PermissionException as exc:
        raise _fail(
            f"refused: {exc}. `keytrail sql` reads only the lake's `events` view (file and network access are "
            "off in this session); query it instead, e.g. SELECT * FROM events LIMIT 10"
        ) from None
    except QueryRefused as exc:
        raise _fail(f"refused: {exc}. Write one SELECT over `events`.") from None
    except (duckdb.Error, pa.ArrowException) as exc:
        raise _fail(f"query failed: {exc}", code=1) from None
    _write(table, fmt, output, title="sql", full=full)


def _sql_window(
    lake_path: Path, since: str | None, until: str | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The partitions to read: the given bounds, else the whole lake (its first day .. the day after its last).
    ValueError when the window is inverted or outside the span the lake can hold."""
    days = readable_partitions(lake_path) or [now.date()]
    first, last = min(days), max(days)
    start = times.parse_time(since, now) if since else times.midnight(first)
    end = times.parse_time(until, now) if until else times.midnight(last + dt.timedelta(days=1))
    try:
        times.check_window(start, end)
    except ValueError as exc:
        if since and until:
            raise
        raise ValueError(f"{exc}; a flag not given defaults to the lake's days, {first} .. {last}") from None
    return start, end


# --- output ------------------------------------------------------------------------------------------------------


def _write(table: pa.Table, fmt: str, output: Path | None, *, title: str, full: bool) -> None:
    """`write_result`, or one line saying which value the format cannot hold (a BLOB in CSV, a year past 9999)."""
    try:
        write_result(table, fmt, output, title=title, full=full)
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise _fail(f"cannot write the result as {fmt}: {exc}", code=1) from None


def _check_format(fmt: str, output: Path | None) -> None:
    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise _fail("--format parquet writes a file: add --output result.parquet")


def register(app: typer.Typer) -> None:
    """Add `query` (list/show/run) and `sql` to the app."""
    app.add_typer(query_app, name="query")
    app.command("sql")(sql_command)
