"""What every command group needs the same way: failing with a clear message, reading date flags."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console
from rich.markup import escape


def fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    """Print an error and return the Exit to raise. Escaped: messages hold paths, ARNs and `[...]` hints."""
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def parse_date(value: str, flag: str) -> dt.date:
    """A YYYY-MM-DD flag value, or a usage error naming the flag."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date: use YYYY-MM-DD", param_hint=flag) from None
