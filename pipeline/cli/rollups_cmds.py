"""`keytrail rollups rebuild`: recreate the lake's hourly rollups from its committed events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import lake, safe_text
from pipeline.cli.common import fail, lake_dir, make_console, parse_date
from pipeline.lake import rollups
from pipeline.settings import Settings

rollups_app = typer.Typer(
    help="The lake's hourly rollups (what detection baselines read).", no_args_is_help=True, rich_markup_mode="rich"
)


@rollups_app.command("rebuild")
def rebuild_command(
    lake_path: Annotated[
        Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")
    ] = None,
    date: Annotated[
        list[str] | None, typer.Option("--date", help="Day to rebuild (YYYY-MM-DD, repeatable; default: every day).")
    ] = None,
) -> None:
    """Recreate the hourly rollups from the committed events, one day at a time, atomically (readers see a day's
    old rollups or its new ones, never a mix). Ingest keeps rollups up to date by itself: rebuild after
    upgrading a lake written before rollups existed, or to repair them.

    Example: keytrail rollups rebuild --lake ./lake --date 2024-05-01
    """
    settings = Settings.from_env()
    console = make_console()
    lake_path = lake_dir(lake_path, settings)
    if not lake.events_dir(lake_path).is_dir():
        raise fail(console, f"{lake_path} has no events/: run `keytrail ingest SOURCE --lake {lake_path}` first")
    days = [parse_date(value, "--date") for value in date or ()] or rollups.rebuild_days(lake_path)
    now = dt.datetime.now(dt.UTC)
    table = Table(title=f"rollups rebuilt in {safe_text.markup(lake_path)}")
    for column in ("day", "events", "files replaced", "rollup rows"):
        table.add_column(column, justify="right")
    with Progress(
        TextColumn("[bold]rollups rebuild"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        for day in bar.track(days):
            result = rollups.rebuild(lake_path, day, now=now)
            table.add_row(day.isoformat(), f"{result.events:,}", str(result.files_before), f"{result.rows:,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(rollups_app, name="rollups")
