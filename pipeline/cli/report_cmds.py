"""`keytrail report`: a static HTML summary of a period of the lake (alerts, charts, top callers, denials)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import duckdb
import typer

from pipeline import catalog, safe_text
from pipeline.alerting.outbox import OutboxError
from pipeline.cli import tuning_cmds
from pipeline.cli.common import command_prefix, fail, lake_dir, make_console
from pipeline.investigate import InvestigationError, check_lake
from pipeline.settings import Settings
from pipeline.times import check_window, iso, parse_time


def report_command(
    since: Annotated[str, typer.Option("--since", help="Period start: ISO (2024-05-01) or relative (-7d).")] = "-24h",
    until: Annotated[
        str, typer.Option("--until", help="Period end (exclusive): ISO or relative; default now.")
    ] = "now",
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    lake: Annotated[
        Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE, else ./keytrail-lake).")
    ] = None,
    detections: Annotated[
        bool,
        typer.Option(
            "--detect/--no-detect", help="Run the detections over the period too (default), or show the outbox only."
        ),
    ] = True,
    tuning: tuning_cmds.TuningOption = None,
) -> None:
    """Write one self-contained HTML page about a period: alerts by severity with their runbooks, volume charts,
    top principals/keys/secrets and denied calls. No external assets: mail it or attach it to a ticket.

    Example: keytrail report --lake ./demo-lake --since 2024-05-01 --until 2024-05-09 --out report.html
    """
    now = dt.datetime.now(dt.UTC)  # the only clock read: relative times resolve against it
    err = make_console(stderr=True)
    lake_path = lake_dir(lake)
    try:
        check_lake(lake_path)
        start, end = parse_time(since, now), parse_time(until, now)
        check_window(start, end)
    except (InvestigationError, ValueError) as exc:
        raise fail(err, str(exc), 2) from None
    try:
        with err.status(f"building the report for {iso(start)} .. {iso(end)}", spinner="dots"):
            from pipeline import report  # matplotlib: ~0.9 s to import, only this command needs it

            settings = Settings.from_env()
            tuned = tuning_cmds.load_tuning(err, tuning, settings, catalog.load("detections"))
            built = report.build(
                lake_path,
                start,
                end,
                now=now,
                run_detections=detections,
                tuning=tuned,
                command_prefix=command_prefix(),
            )
            report.write(built, out)
    except (catalog.CatalogError, duckdb.Error, OSError, OutboxError) as exc:
        raise fail(err, str(exc)) from None
    err.print(f"{len(built.alerts)} alert(s), {built.totals['events']:,} events -> {safe_text.markup(out)}")


def register(app: typer.Typer) -> None:
    """Add `report` to the app."""
    app.command("report")(report_command)
