"""What every command group needs the same way: a console, failing with a clear message, reading date flags,
showing a severity."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from pipeline import lake as lakelib
from pipeline import safe_text
from pipeline.settings import Settings

SEVERITY_STYLE: dict[str, str] = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def make_console(*, stderr: bool = False, **options: Any) -> Console:
    """The one way the CLI makes a rich Console. What it prints is data: no emoji codes (`:secret:` inside a
    Secrets Manager ARN stays text) and no automatic highlighting of numbers, paths or ARNs in it."""
    return Console(stderr=stderr, emoji=False, highlight=False, **options)


def fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    """Print an error and return the Exit to raise. Escaped: messages hold paths, ARNs and `[...]` hints, and
    what they quote from a trail may hold control characters; their own line breaks are kept."""
    # soft_wrap: one line per line of the message (the terminal wraps it), so a path or command in it copies whole
    console.print(f"[red]error:[/red] {safe_text.markup(message, multiline=True)}", soft_wrap=True)
    return typer.Exit(code)


def severity_markup(severity: str) -> str:
    """A severity in its colour, as rich markup for a table cell."""
    return f"[{SEVERITY_STYLE[severity]}]{severity}[/]"


def parse_date(value: str, flag: str) -> dt.date:
    """A YYYY-MM-DD flag value, or a usage error naming the flag."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date: use YYYY-MM-DD", param_hint=flag) from None


def command_prefix() -> str:
    """How the user runs keytrail, for the commands the CLI prints to paste: `uv run keytrail` when this process
    runs under `uv run` (uv sets UV for what it runs: a checkout, as the README's quickstart does), else
    `keytrail` (installed)."""
    return "uv run keytrail" if os.environ.get("UV") else "keytrail"


def lake_dir(option: Path | None, settings: Settings | None = None) -> Path:
    """The lake a command works on: --lake, else KEYTRAIL_LAKE. For an s3://bucket/prefix lake, this machine's
    replica of it (synced with the lake's log; see `pipeline.lake.remote`)."""
    return lakelib.lake_dir(option, settings if settings is not None else Settings.from_env())
