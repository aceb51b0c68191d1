"""The one way the CLI prints records: a table that fits the terminal, plain text when piped, CSV or JSON lines.

On a terminal, a table never wraps inside a value: columns the width cannot hold are hidden lowest priority
first, and long values are shortened (ids and ARNs in the middle, so account, type and the unique tail stay
readable; free text at the end), each marked with `…`. A note under the table names what was hidden and
`--full` shows every column and every value whole: as a table when it fits, else one block per record, a
`name  value` line per column, never broken by the program (the terminal may soft-wrap a long line, and
copying it gives the whole value). Piped output (not a terminal) is plain aligned text with full values, no
colours and no box drawing. `--format csv` / `json` print the same records for machines, values verbatim.

Every value is shown through `safe_text.visible`: no markup, no emoji codes (`:secret:` in a Secrets Manager
ARN stays text), no control or bidi characters.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline import safe_text
from pipeline.cli.common import SEVERITY_STYLE, make_console

Kind = Literal["id", "text", "time", "number", "tag"]
RECORD_FORMATS: tuple[str, ...] = ("table", "json", "csv")
ELLIPSIS = "…"
# The narrowest a shortened value may get: enough for `arn:aws:kms:…a1d-494d` to still tell keys apart.
_MIN_WIDTH: dict[str, int] = {"id": 24, "text": 16}
_WHOLE_BELOW = 16  # a value this short (an IP address, an operation name) is never shortened
GAP = 3  # between two columns: the padding on both sides and the box's blank separator
_FIXED = ("time", "number", "tag")  # never shortened: a cut time or count would be a wrong one

FormatOption = Annotated[
    str,
    typer.Option(
        "--format", "-f", help="table (fits the terminal; plain text when piped), json (one object per line) or csv."
    ),
]
FullOption = Annotated[bool, typer.Option("--full", help="Show every column and every value whole (no … shortening).")]


@dataclass(frozen=True)
class Column:
    """A column of a listing. `priority`: 0 is never hidden; higher numbers give way first on a narrow screen."""

    name: str
    kind: Kind = "text"
    priority: int = 1
    style: Callable[[str], str] | None = None  # a rich style for a cell's value (severity colours)


def severity_column() -> Column:
    """The severity of an alert or finding, in its colour: never hidden."""
    return Column("severity", "tag", priority=0, style=lambda v: SEVERITY_STYLE.get(v, ""))


@dataclass(frozen=True)
class Listing:
    """Records to print: display rows (one string per column) and, for JSON, the full records."""

    title: str
    columns: tuple[Column, ...]
    rows: Sequence[Sequence[str]]
    records: Sequence[Mapping[str, Any]] | None = None  # default: each row as {column: value}
    notes: tuple[str, ...] = field(default=())
    empty: str = "no rows"

    def json_records(self) -> list[Mapping[str, Any]]:
        if self.records is not None:
            return list(self.records)
        return [dict(zip((c.name for c in self.columns), row, strict=True)) for row in self.rows]


def check_format(fmt: str, allowed: Sequence[str] = RECORD_FORMATS) -> None:
    if fmt not in allowed:
        raise typer.BadParameter(f"{fmt!r}: use {' or '.join(allowed)}", param_hint="--format")


def emit(listing: Listing, fmt: str, *, full: bool = False, console: Console | None = None) -> None:
    """Print `listing` as `fmt` (table, json or csv) on stdout (or `console`)."""
    console = console or make_console()
    # Machine and piped forms are written as they are: no markup, emoji, highlighting or wrapping on the way.
    if fmt == "json":
        lines = (safe_text.json_text(msgspec.json.encode(record).decode()) for record in listing.json_records())
        console.file.write("".join(line + "\n" for line in lines))
    elif fmt == "csv":
        console.file.write(csv_text(listing))
    elif not console.is_terminal:
        console.file.write(plain_text(listing))
    else:
        print_table(console, listing, full=full)


def csv_text(listing: Listing) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in listing.columns])
    writer.writerows(listing.rows)
    return buffer.getvalue()


def plain_text(listing: Listing) -> str:
    """Aligned columns, full values, no styles: for a pipe, a pager or a file."""
    header = [c.name for c in listing.columns]
    cells = [[safe_text.visible(v) for v in row] for row in listing.rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]
    lines = [safe_text.visible(listing.title)] if listing.title else []
    for row in (header, *cells):
        lines.append(
            "  ".join(
                v.rjust(w) if _right(c) else v.ljust(w) for v, w, c in zip(row, widths, listing.columns, strict=True)
            ).rstrip()
        )
    if not cells:
        lines.append(listing.empty)
    lines.extend(safe_text.visible(note) for note in listing.notes)
    return "\n".join(lines) + "\n"


def _right(column: Column) -> bool:
    return column.kind == "number"


# --- fitting a table to the terminal -------------------------------------------------------------------------


def shorten(value: str, width: int, kind: Kind) -> str:
    """`value` in at most `width` characters: ids keep their head and tail (`arn:aws:kms:us-e…494d-b4dd`),
    text its head; `…` marks the cut."""
    if len(value) <= width:
        return value
    if width <= 1:
        return ELLIPSIS[:width]
    if kind == "id":
        tail = (width - 1) // 2
        return value[: width - 1 - tail] + ELLIPSIS + value[len(value) - tail :]
    return value[: width - 1] + ELLIPSIS


def fit(
    columns: Sequence[Column], natural: Sequence[int], available: int, gap: int = GAP
) -> tuple[list[int], list[int]]:
    """Column widths for `available` characters with `gap` between columns: (indexes shown, widths).

    Hides lowest-priority columns until the narrowest widths fit; then shares the room left evenly among the
    columns that want more (so short values such as IP addresses come out whole), the last of it to the most
    important columns."""
    least = [_least(c, n) for c, n in zip(columns, natural, strict=True)]
    shown = list(range(len(columns)))

    def needed(indexes: list[int]) -> int:
        return sum(least[i] for i in indexes) + gap * (len(indexes) - 1)

    while len(shown) > 1 and needed(shown) > available:
        candidates = [i for i in shown if columns[i].priority > 0] or shown[1:]
        shown.remove(max(candidates, key=lambda i: (columns[i].priority, i)))
    widths = {i: least[i] for i in shown}
    room = available - needed(shown)
    wanting = [i for i in shown if natural[i] > widths[i]]
    while room > 0 and wanting:
        share = max(1, room // len(wanting))
        for i in sorted(wanting, key=lambda i: (columns[i].priority, i)):
            extra = min(share, natural[i] - widths[i], room)
            widths[i] += extra
            room -= extra
        wanting = [i for i in wanting if natural[i] > widths[i]]
    if len(shown) == 1:  # a single column wider than the screen: shorten it to the screen
        widths[shown[0]] = max(1, min(widths[shown[0]], available))
    return shown, [widths[i] for i in shown]


def _least(column: Column, natural: int) -> int:
    """The narrowest a column may get: whole for times, numbers and tags, and for any value that is short."""
    if column.kind in _FIXED or natural <= _WHOLE_BELOW:
        return natural
    return _MIN_WIDTH[column.kind]


def print_table(console: Console, listing: Listing, *, full: bool = False) -> None:
    """The listing as a table fitted to `console`'s width, or (`full`) whole: a table when it fits, else a
    block of `name  value` lines per record."""
    if listing.title:
        console.print(safe_text.terminal(listing.title, style="bold"))
    if not listing.rows:
        console.print(safe_text.terminal(listing.empty))
        _notes(console, listing.notes)
        return
    cells = [[safe_text.visible(v) for v in row] for row in listing.rows]
    natural = [max([len(c.name), *(len(row[i]) for row in cells)]) for i, c in enumerate(listing.columns)]
    whole_width = sum(natural) + GAP * (len(natural) - 1)
    if full and whole_width > console.width:
        _print_records(console, listing, cells)
        _notes(console, listing.notes)
        return
    available = 10**6 if full else console.width
    shown, widths = fit(listing.columns, natural, available)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False, expand=False)
    for i, width in zip(shown, widths, strict=True):
        column = listing.columns[i]
        table.add_column(
            Text(shorten(column.name, width, "text")),
            justify="right" if _right(column) else "left",
            no_wrap=True,
            overflow="ellipsis",
            min_width=width,
            max_width=width,
        )
    shortened = False
    for row in cells:
        out: list[Text] = []
        for i, width in zip(shown, widths, strict=True):
            column = listing.columns[i]
            value = shorten(row[i], width, column.kind)
            shortened |= value != row[i]
            out.append(Text(value, style=column.style(row[i]) if column.style else ""))
        table.add_row(*out)
    console.print(table, soft_wrap=True)
    hidden = [c.name for i, c in enumerate(listing.columns) if i not in shown]
    notes = list(listing.notes)
    if hidden or shortened:
        what = f"{len(hidden)} column(s) hidden ({', '.join(hidden)})" if hidden else ""
        cut = "… marks a shortened value" if shortened else ""
        notes.append("; ".join(x for x in (what, cut) if x) + ": --full shows everything, --format json for scripts")
    _notes(console, tuple(notes))


def _print_records(console: Console, listing: Listing, cells: list[list[str]]) -> None:
    label = max(len(c.name) for c in listing.columns)
    for number, row in enumerate(cells, start=1):
        console.print(Text(f"── {number} of {len(cells)} ──", style="dim"), soft_wrap=True)
        for column, value in zip(listing.columns, row, strict=True):
            style = column.style(value) if column.style else ""
            console.print(Text.assemble((column.name.ljust(label) + "  ", "bold"), (value, style)), soft_wrap=True)


def print_fields(
    console: Console, title: str, fields: Mapping[str, str], *, styles: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    """One record as `name  value` lines, every value whole (one line each, never broken by the program)."""
    console.print(safe_text.terminal(title, style="bold"), soft_wrap=True)
    label = max((len(name) for name in fields), default=0)
    for name, value in fields.items():
        shown = safe_text.visible(value)
        style = (styles or {}).get(name, {}).get(value, "")
        console.print(Text.assemble((name.ljust(label) + "  ", "bold"), (shown, style)), soft_wrap=True)


def _notes(console: Console, notes: Sequence[str]) -> None:
    for note in notes:
        console.print(safe_text.terminal(note, style="dim"))  # prose: wrapped between words


def strings(values: Sequence[Any]) -> list[str]:
    """Display strings for a row: None as empty."""
    return ["" if v is None else str(v) for v in values]
