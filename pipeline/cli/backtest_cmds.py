"""`keytrail backtest`: the detection catalog over a long range in one pass, findings per detection per day.

With --compare-param the changed detections run again with the compared params, and both columns and their
difference are printed, so a threshold change is judged on real history before it ships. The CLI reads the
clock (relative --since/--until); the counting is pipeline/backtest.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import duckdb
import pyarrow as pa
import typer
from rich.console import Console

from pipeline import backtest, catalog, detect, findings, times
from pipeline.alerting.alert import Alert
from pipeline.cli import tuning_cmds
from pipeline.cli.common import fail, lake_dir, make_console
from pipeline.cli.detect_cmds import QueriesOption, detections_progress, parse_param_overrides, run_tracked
from pipeline.cli.output import write_result
from pipeline.settings import Settings
from pipeline.tuning.model import Tuning

_FORMATS = ("table", "json", "csv")

_HELP = (
    "Run the detections over a long range of the lake in one pass and print the findings per detection per "
    "day, each detection's total and the grand total.\n\n"
    "Every bucket is judged against its own trailing lookback, so the counts are what the scheduled runs over "
    "the range would have found. --param sets params for the run; --compare-param runs the named detections "
    "again with these params on top and prints both counts and the difference (compared - findings). "
    "--since/--until take ISO times or times relative to now (-30d, -12h, now). The tuning file (--tuning, "
    "KEYTRAIL_TUNING or ./keytrail.yaml) applies to the run: findings its exceptions cover are not counted; "
    "--compare-tuning B runs again with tuning file B instead, so a tuning change shows its effect per "
    "detection per day before it is committed.\n\n"
    "Example: keytrail backtest --lake ./lake --since -30d "
    "--compare-param kms_decrypt_volume_spike.min_events=1000 --format table\n\n"
    "Example: keytrail backtest --lake ./lake --since -30d --tuning keytrail.yaml --compare-tuning proposed.yaml"
)


def backtest_command(
    lake: Annotated[Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")] = None,
    since: Annotated[str, typer.Option("--since", help=f"Range start: {times.TIME_HELP}.")] = "-30d",
    until: Annotated[str, typer.Option("--until", help="Range end (exclusive); default now.")] = "now",
    detection: Annotated[
        list[str] | None, typer.Option("--detection", "-d", help="Backtest only this detection (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A param for both runs: ID.name=value (repeatable).")
    ] = None,
    compare_param: Annotated[
        list[str] | None,
        typer.Option("--compare-param", help="A param to compare: ID.name=value (repeatable)."),
    ] = None,
    trusted_account: Annotated[
        list[str] | None, typer.Option("--trusted-account", help="A trusted AWS account id (repeatable).")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, json (one row per line) or csv.")] = "table",
    queries: QueriesOption = None,
    tuning: tuning_cmds.TuningOption = None,
    compare_tuning: Annotated[
        Path | None, typer.Option("--compare-tuning", help="A second tuning file to compare with --tuning's.")
    ] = None,
) -> None:
    now = dt.datetime.now(dt.UTC)  # the only clock read of a backtest
    settings = Settings.from_env()
    err = make_console(stderr=True)
    if output not in _FORMATS:
        raise typer.BadParameter(f"{output!r}: use {', '.join(_FORMATS)}", param_hint="--format")
    try:
        start, end = times.parse_time(since, now), times.parse_time(until, now)
        times.check_window(start, end)
    except ValueError as exc:
        raise fail(err, str(exc), 2) from None
    overrides = parse_param_overrides(param or [])
    compared = parse_param_overrides(compare_param or [])
    lake_path = lake_dir(lake, settings)
    if not lake_path.is_dir():
        raise fail(err, f"lake {lake_path} not found: ingest a trail first or pass --lake")
    if compare_tuning is not None and compare_param:
        raise fail(err, "--compare-tuning and --compare-param each make the compared run: use one of them", 2)
    try:
        shipped = catalog.load("detections", queries)
        tuned = tuning_cmds.load_tuning(err, tuning, settings, shipped)
        detections = findings.tuned_catalog(shipped, tuned)
        if compare_tuning is not None:
            other = tuning_cmds.load_tuning(err, compare_tuning, settings, shipped)
            trusted = tuple(trusted_account or settings.trusted_accounts)
            table = _compare_tunings(
                err, lake_path, (start, end), shipped, (tuned, other), detection, overrides, trusted, now
            )
            write_result(table, output, None, title=f"findings per day, {times.display(start)} .. {times.display(end)}")
            return
        selected = [q.id for q in detect.select_detections(detections, detection or None)]
        compared_overrides = {i: {**overrides.get(i, {}), **compared[i]} for i in selected if i in compared}
        detect.check_overrides(detect.select_detections(detections, selected), compared_overrides)
        if unknown := sorted(set(compared) - set(selected)):
            raise ValueError(f"--compare-param for {', '.join(unknown)}, which is not among the detections run")
        runs: list[tuple[str, list[str], dict[str, dict[str, Any]]]] = [("findings", selected, overrides)]
        if compared:
            runs.append(("compared", list(compared_overrides), compared_overrides))
        found = _run_with_progress(
            err, lake_path, (start, end), detections, runs, tuple(trusted_account or settings.trusted_accounts),
            tuned, now,
        )  # fmt: skip
    except (ValueError, catalog.CatalogError, duckdb.Error) as exc:
        raise fail(err, str(exc)) from None
    baseline = findings.paging(found["findings"])  # what an exception covers does not page: not counted
    if compared:
        # detections without compared params find the same in both runs
        again = [a for a in baseline if a.detection_id not in compared_overrides] + findings.paging(found["compared"])
        table = backtest.backtest_table(selected, baseline, again)
    else:
        table = backtest.backtest_table(selected, baseline)
    title = f"findings per day, {times.display(start)} .. {times.display(end)}"
    write_result(table, output, None, title=title)


def _run_with_progress(
    err: Console,
    lake: Path,
    window: tuple[dt.datetime, dt.datetime],
    detections: Sequence[catalog.Query],
    runs: Sequence[tuple[str, list[str], dict[str, dict[str, Any]]]],
    trusted: tuple[str, ...],
    tuning: Tuning,
    now: dt.datetime,
) -> dict[str, list[Alert]]:
    """Each run (name, detection ids, param overrides) over the whole window, with a bar per run."""
    with detections_progress(err) as progress:
        return {
            name: run_tracked(
                progress,
                name,
                lake,
                window,
                detections,
                detection_ids=ids,
                overrides=overrides,
                trusted=trusted,
                tuning=tuning,
                now=now,
            )
            for name, ids, overrides in runs
        }


def _compare_tunings(
    err: Console,
    lake: Path,
    window: tuple[dt.datetime, dt.datetime],
    shipped: Sequence[catalog.Query],
    tunings: tuple[Tuning, Tuning],
    named: Sequence[str] | None,
    overrides: dict[str, dict[str, Any]],
    trusted: tuple[str, ...],
    now: dt.datetime,
) -> pa.Table:
    """The paging findings under each tuning file (its params, severities, enabled set, exceptions), side by
    side per detection per day; a detection either file runs has rows."""
    catalogs = [findings.tuned_catalog(shipped, tuning) for tuning in tunings]
    runs: list[list[Alert]] = []
    with detections_progress(err) as progress:
        for name, tuning, detections in zip(("findings", "compared"), tunings, catalogs, strict=True):
            found = run_tracked(
                progress, name, lake, window, detections, detection_ids=_ids(detections, named),
                overrides=overrides, trusted=trusted, tuning=tuning, now=now,
            )  # fmt: skip
            runs.append(findings.paging(found))
    either = {i for detections in catalogs for i in _ids(detections, named)}
    return backtest.backtest_table([q.id for q in shipped if q.id in either], *runs)


def _ids(detections: Sequence[catalog.Query], named: Sequence[str] | None) -> list[str]:
    """The detections a run takes: the named ones, else those its tuning leaves enabled."""
    return [q.id for q in detect.select_detections(detections, named or None)]


def register(app: typer.Typer) -> None:
    """Add `backtest` to the app."""
    app.command("backtest", help=_HELP)(backtest_command)
