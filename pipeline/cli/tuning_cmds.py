"""`keytrail tuning check|show`: validate the tuning file, count what each exception matched over recent history
(stale ones: nothing), and print the effective configuration per detection. Also the `--tuning` option and the
loading every command shares (pipeline/tuning does the work; docs/tuning.md is the guide)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer
from rich.console import Console
from rich.table import Table

from pipeline import catalog, findings, safe_text
from pipeline.catalog import Query
from pipeline.cli.common import fail, make_console, severity_markup
from pipeline.settings import Settings
from pipeline.times import display
from pipeline.tuning import apply, loader
from pipeline.tuning.matching import applies_to
from pipeline.tuning.model import Tuning, TuningException
from pipeline.tuning.tags import detection_tags

TuningOption = Annotated[
    Path | None,
    typer.Option(
        "--tuning",
        help="The tuning file (default: KEYTRAIL_TUNING, else ./keytrail.yaml when present; see docs/tuning.md).",
    ),
]
QueriesOption = Annotated[
    Path | None, typer.Option("--queries", help="Query tree to use instead of the repository's queries/.")
]
STALE_DAYS = 30

app = typer.Typer(help="The tuning file: validate it, see what its exceptions match, print the effective setup.")


def load_tuning(console: Console, explicit: Path | None, settings: Settings, detections: Sequence[Query]) -> Tuning:
    """The run's tuning file loaded against `detections`, or exit 1 with the file, line and what to do."""
    try:
        return loader.load_for_run(explicit, settings, detections)
    except loader.TuningError as exc:
        raise fail(console, str(exc)) from None


def expiry_notices(tuning: Tuning, now: dt.datetime) -> dict[str, str]:
    return apply.expiry_notices(tuning, now)


def print_expired(console: Console, tuning: Tuning, now: dt.datetime) -> None:
    """Name the expired exceptions (a run that records nothing says so every time)."""
    for message in apply.expiry_notices(tuning, now).values():
        console.print(f"[yellow]note:[/yellow] {safe_text.markup(message)}")


def _shipped(err: Console, output: str, queries: Path | None) -> tuple[Query, ...]:
    """The shipped detection catalog, after checking --format (both commands print table or json)."""
    if output not in ("table", "json"):
        raise fail(err, f"unknown --format {output!r}: use table or json", 2)
    try:
        return catalog.load("detections", queries)
    except catalog.CatalogError as exc:
        raise fail(err, str(exc)) from None


def _scope(exception: TuningException, tuning: Tuning) -> str:
    owner = next((d for d, t in tuning.detections.items() if exception in t.exceptions), None)
    if owner:
        return owner
    if exception.detections:
        return "global: " + ", ".join(exception.detections)
    return "global: tags " + ", ".join(exception.tags) if exception.tags else "global: all"


@app.command("check")
def check_command(
    lake: Annotated[Path | None, typer.Option("--lake", help="The lake (default: KEYTRAIL_LAKE).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="How far back to count matches.")] = STALE_DAYS,
    tuning: TuningOption = None,
    queries: QueriesOption = None,
    output: Annotated[str, typer.Option("--format", help="table or json (one exception per line).")] = "table",
) -> None:
    """Validate the tuning file and list what each exception matched over the last --days days of the lake.

    An exception that matched nothing over the period is reported as stale, an expired one as expired (it no
    longer matches; the count says what it would still cover). Exit 1 when the file is invalid.

    Example: keytrail tuning check --tuning keytrail.yaml --lake ./lake --days 30
    """
    now = dt.datetime.now(dt.UTC)  # the only clock read of a check
    settings = Settings.from_env()
    console, err = make_console(), make_console(stderr=True)
    shipped = _shipped(err, output, queries)
    try:
        path = loader.locate(tuning, settings)
    except loader.TuningError as exc:
        raise fail(err, str(exc)) from None
    if path is None:
        raise fail(err, "no tuning file: pass --tuning PATH, set KEYTRAIL_TUNING or create ./keytrail.yaml "
                   "(docs/tuning.md has examples)")  # fmt: skip
    tuned = load_tuning(err, path, settings, shipped)
    err.print(f"{safe_text.markup(path)}: valid ({len(tuned.detections)} detection(s) tuned, "
              f"{len(tuned.all_exceptions())} exception(s))")  # fmt: skip
    lake_path = lake if lake is not None else settings.lake
    if not lake_path.is_dir():
        raise fail(err, f"lake {lake_path} not found: pass --lake to count what each exception matched")
    since = now - dt.timedelta(days=days)
    detections = findings.tuned_catalog(shipped, tuned)
    try:
        alerts = findings.find(lake_path, since, now, detections=detections, tuning=tuned, now=now, names=False)
    except (ValueError, duckdb.Error) as exc:
        raise fail(err, str(exc)) from None
    covered = apply.exceptions_covering(alerts, tuned, detections, now)
    enabled = {q.id for q in detections if q.enabled}
    rows = []
    for exception in tuned.all_exceptions():
        matched = covered[exception.ref]
        scope = _scope(exception, tuned)
        status = "expired" if exception.expired(now) else "stale" if not matched else "ok"
        if not scope.startswith("global") and scope not in enabled:
            status = "detection disabled"
        rows.append((exception, scope, len(matched), status, sorted({a.detection_id for a in matched})))
    if output == "json":
        for exception, scope, count, status, detections_hit in rows:
            record = {**exception.to_dict(), "scope": scope, "matched": count, "status": status,
                      "detections": detections_hit, "days": days}  # fmt: skip
            typer.echo(safe_text.json_text(json.dumps(record)))
        return
    table = Table(title=f"tuning exceptions: matches over {days} day(s), {display(since)} .. {display(now)}")
    for column in ("exception", "where", "scope", "owner", "expires", "matched", "status"):
        table.add_column(column, justify="right" if column == "matched" else "left", overflow="fold")
    style = {"ok": "green", "stale": "yellow", "expired": "red", "detection disabled": "dim"}
    for exception, scope, count, status, _ in rows:
        table.add_row(
            safe_text.markup(exception.ref),
            safe_text.markup(exception.source),
            safe_text.markup(scope),
            safe_text.markup(exception.owner),
            str(exception.expires or "-"),
            f"{count:,}",
            f"[{style[status]}]{status}[/]",
        )
    console.print(table)
    stale = [row for row in rows if row[3] == "stale"]
    if stale:
        console.print(f"{len(stale)} stale exception(s): nothing matched in {days} day(s); remove them or check "
                      "their patterns")  # fmt: skip


@app.command("show")
def show_command(
    tuning: TuningOption = None,
    queries: QueriesOption = None,
    output: Annotated[str, typer.Option("--format", help="table or json (one detection per line).")] = "table",
) -> None:
    """Print the effective configuration of every detection: enabled, severity, re-alert interval, the params the
    file sets (marked *; --format json lists every param's value), tags, and the exceptions that apply to it
    (its own and global ones).

    Example: keytrail tuning show --tuning keytrail.yaml
    """
    settings = Settings.from_env()
    console, err = make_console(), make_console(stderr=True)
    shipped = _shipped(err, output, queries)
    tuned = load_tuning(err, tuning, settings, shipped)
    records = [_effective(query, tuned) for query in shipped]
    if output == "json":
        for record in records:
            typer.echo(safe_text.json_text(json.dumps(record, default=str)))
        return
    source = safe_text.markup(tuned.path) if tuned.path else "no tuning file (as shipped)"
    table = Table(title=f"effective detections: {source}")
    for column in ("detection", "enabled", "severity", "realert", "params", "tags", "exceptions"):
        table.add_column(column, overflow="fold")
    for record in records:
        tuned_params = [f"{name}={record['params'][name]}*" for name in record["tuned_params"]]
        untouched = len(record["params"]) - len(tuned_params)
        params = ", ".join([*tuned_params, *([f"{untouched} as shipped"] if untouched else [])]) or "-"
        table.add_row(
            safe_text.markup(record["detection"]),
            "yes" if record["enabled"] else "[dim]no[/dim]",
            severity_markup(record["severity"]) + (" *" if record["severity_tuned"] else ""),
            str(record["realert"] or "default"),
            safe_text.markup(params),
            ", ".join(record["tags"]),
            safe_text.markup("\n".join(f"{e['id']} ({e['owner']})" for e in record["exceptions"]) or "-"),
        )
    console.print(table)
    console.print("* set by the tuning file")


def _effective(query: Query, tuning: Tuning) -> dict[str, Any]:
    own = tuning.detections.get(query.id)
    tuned = findings.tuned_catalog([query], tuning)[0]
    tuned_params = dict(own.params) if own else {}
    tags = detection_tags(query)
    exceptions = [*(own.exceptions if own else ()), *(e for e in tuning.exceptions if applies_to(e, query.id, tags))]
    return {
        "detection": query.id,
        "enabled": tuned.enabled,
        "severity": tuned.severity,
        "severity_tuned": tuned.severity != query.severity,
        "realert": str(tuned.realert) if tuned.realert else None,
        "params": {p.name: tuned_params.get(p.name, p.default) for p in query.params},
        "tuned_params": sorted(tuned_params),
        "tags": sorted(tags),
        "exceptions": [e.to_dict() for e in exceptions],
    }


def register(root: typer.Typer) -> None:
    """Add the `tuning` group to the app."""
    root.add_typer(app, name="tuning")
