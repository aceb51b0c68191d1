"""Summaries of a lake window as polars DataFrames, for the notebooks and the HTML report.

Each function runs one analysis query (queries/analysis/<id>.sql + .yml, YAML cases and conformance like every
query) in an `Engine` session opened over the window (`open_window`), which binds `$since`/`$until`, and
returns a small DataFrame ready to plot or show. `investigation()` runs an investigation over the same session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import catalog, investigate, times
from pipeline.alerting.alert import Alert
from pipeline.alerting.outbox import Outbox, OutboxEntry, OutboxError, outbox_path
from pipeline.catalog import Query
from pipeline.engine import Engine, readable_partitions
from pipeline.integrity.results import Coverage

KIND = "analysis"
# A checkout's root (where README, notebooks/ and ./demo-lake live); an installed package has no such parent.
REPOSITORY = Path(__file__).resolve().parents[1]


def lake_path(lake: Path | str | None, *, default: Path, started_in: Path | None = None) -> Path:
    """The lake a notebook means: `lake` (else `default`, the KEYTRAIL_LAKE setting). A relative path is the
    user's, not the kernel's (a kernel runs in notebooks/): it resolves against the directory the user started
    from (`started_in`, the shell's PWD) when the lake is there, else against the repository root."""
    path = Path(lake) if lake else default
    if path.is_absolute():
        return path
    for base in (started_in, REPOSITORY):
        if base is not None and (base / path).is_dir():
            return (base / path).resolve()
    return (started_in or REPOSITORY) / path


def last_day(lake: Path | str) -> tuple[dt.datetime, dt.datetime]:
    """The lake's last day of data as [midnight, next midnight): the default window when none is given, so a
    notebook on an old lake shows its data, not an empty "last 24 hours" of the wall clock."""
    days = readable_partitions(Path(lake))
    if not days:
        raise investigate.InvestigationError(f"no events in the lake {lake}: ingest a trail first")
    start = times.midnight(max(days))
    return start, start + dt.timedelta(days=1)


def show_whole_tables() -> None:
    """polars display for notebooks: every row and whole values (ARNs, names), not 10 rows of 30 characters."""
    pl.Config.set_tbl_rows(-1)
    pl.Config.set_fmt_str_lengths(500)
    pl.Config.set_tbl_width_chars(10_000)
    pl.Config.set_tbl_cols(-1)


def open_window(lake: Path | str, since: dt.datetime, until: dt.datetime) -> Engine:
    """A locked session whose `events` covers [since, until) of the lake (close it, or use `with`)."""
    return Engine.for_lake(investigate.check_lake(Path(lake)), since, until)


def denied_codes() -> list[str]:
    """The errorCodes that mean "not authorized": the denied_activity investigation's default."""
    return list(investigate.get("denied_activity").param("error_codes").default)


@cache
def _queries() -> dict[str, Query]:
    # Loaded on first use, once per process: a notebook or the report runs several summaries.
    return {query.id: query for query in catalog.load(KIND)}


def _frame(engine: Engine, query_id: str, **params: Any) -> pl.DataFrame:
    query = _queries()[query_id]
    if "error_codes" in query.sql_names:
        params["error_codes"] = denied_codes()
    return engine.run_pl(query, params)


def totals(engine: Engine) -> dict[str, int]:
    """events, principals, keys, secrets, denied and errors in the window."""
    return _frame(engine, "totals").row(0, named=True)


def log_coverage(engine: Engine) -> Coverage:
    """Log files `keytrail verify` found valid, of all it knows for the window (`Coverage.line()` says it)."""
    row = _frame(engine, "log_coverage").row(0, named=True)
    return Coverage(row["verified"], row["log_files"])


def calls_per_hour(engine: Engine) -> pl.DataFrame:
    """hour, event_name, calls."""
    return _frame(engine, "calls_per_hour")


def errors_per_hour(engine: Engine) -> pl.DataFrame:
    """hour, error_code, calls (failed calls only)."""
    return _frame(engine, "errors_per_hour")


def top_principals(engine: Engine, limit: int = 10) -> pl.DataFrame:
    """principal, calls, denied, keys, secrets, source_ips: the busiest callers."""
    return _frame(engine, "top_principals", limit=limit)


def top_keys(engine: Engine, limit: int = 10) -> pl.DataFrame:
    """key, calls, principals, failed, context_keys: the busiest KMS keys."""
    return _frame(engine, "top_keys", limit=limit)


def top_secrets(engine: Engine, limit: int = 10) -> pl.DataFrame:
    """secret, reads, readers, failed: the most read secrets (batch reads count per secret)."""
    return _frame(engine, "top_secrets", limit=limit)


def context_cardinality(engine: Engine, limit: int = 15) -> pl.DataFrame:
    """key, context_key, distinct_values, principals, calls: how many encryption-context values each key saw."""
    return _frame(engine, "context_cardinality", limit=limit)


def principal_calls(engine: Engine, principal: str) -> pl.DataFrame:
    """Every call of a principal (ARN, role ARN or name, user name): time, operation, resource, outcome_class."""
    return _frame(engine, "principal_calls", principal=principal)


def principal_sources(engine: Engine, principal: str) -> pl.DataFrame:
    """source_ip, user_agent, calls, first/last seen of a principal."""
    return _frame(engine, "principal_sources", principal=principal)


def principal_resources(engine: Engine, principal: str) -> pl.DataFrame:
    """The keys and secrets a principal touched: kind, resource, operations, calls, denied, first/last seen."""
    return _frame(engine, "principal_resources", principal=principal)


def investigation(engine: Engine, query_id: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """Run an investigation query over the engine's window (its lookback needs the engine to cover it)."""
    query = investigate.get(query_id)
    return engine.run_pl(query, {"since": engine.since, "until": engine.until, **(params or {})})


# --- the subject of an investigation (investigate.ipynb) --------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """Who and when an investigation looks at: a principal (or "" when the alert names none) and a window."""

    principal: str
    since: dt.datetime
    until: dt.datetime
    alert: Alert | None = None


def subject(
    lake: Path | str,
    *,
    now: dt.datetime,
    alert_id: str = "",
    principal_arn: str = "",
    start: str = "",
    end: str = "",
    pad: dt.timedelta = dt.timedelta(hours=1),
) -> Subject:
    """Who and when to look at: an alert (its principal, its first/last seen +/- `pad`), else a principal over
    [start, end), else the most severe alert of [start, end) in the outbox. Neither start nor end given means
    the lake's last day of data (`last_day`), never the wall clock's last 24 hours."""
    if not start and not end and not alert_id:  # an alert brings its own window
        first, last = last_day(lake)
        start, end = times.iso(first), times.iso(last)
    start, end = start or "-24h", end or "now"  # one end given: the other as the CLI defaults it
    if not alert_id and not principal_arn:
        since, until = times.parse_time(start, now), times.parse_time(end, now)
        entries = outbox_entries(lake, since, until)
        if not entries:
            raise investigate.InvestigationError(
                f"no alert in the outbox for {times.display(since)} .. {times.display(until)}: set alert_id or "
                "principal_arn, or a wider start/end, in the parameters cell"
            )
        alert_id = entries[0].alert.alert_id
    if alert_id:
        try:
            with Outbox.open(Path(lake), create=False) as box:
                alert = box.find(alert_id).alert
        except OutboxError as exc:
            raise investigate.InvestigationError(str(exc)) from None
        principal = principal_arn or alert.principal_arn or ""
        return Subject(principal, alert.first_seen - pad, alert.last_seen + pad, alert)
    return Subject(principal_arn, times.parse_time(start, now), times.parse_time(end, now))


# --- alerts ----------------------------------------------------------------------------------------------------

ALERT_COLUMNS: tuple[str, ...] = (
    "severity", "detection_id", "title", "principal_arn", "resource_arn", "first_seen", "last_seen",
    "event_count", "state", "alert_id",
)  # fmt: skip


def outbox_entries(lake: Path | str, since: dt.datetime, until: dt.datetime) -> list[OutboxEntry]:
    """Outbox alerts whose activity overlaps [since, until), most severe first (none when there is no outbox).

    Raises OutboxError when the outbox cannot be read (damaged, read-only): an empty list would hide it."""
    if not outbox_path(Path(lake)).exists():
        return []
    with Outbox.open(Path(lake), create=False) as box:
        entries = box.entries()
    return [e for e in entries if e.alert.last_seen >= since and e.alert.first_seen < until]


def alerts(lake: Path | str, since: dt.datetime, until: dt.datetime, principal: str | None = None) -> pl.DataFrame:
    """Outbox alerts overlapping [since, until) as a table, optionally of one principal (a session ARN or a
    role name matches the alert's role ARN), most severe first."""
    rows = [
        {**{c: getattr(e.alert, c, None) for c in ALERT_COLUMNS}, "state": e.state}
        for e in outbox_entries(lake, since, until)
        if not principal or _same_principal(e.alert.principal_arn, principal)
    ]
    schema: dict[str, Any] = {c: pl.String for c in ALERT_COLUMNS}
    schema |= {"first_seen": pl.Datetime("us", "UTC"), "last_seen": pl.Datetime("us", "UTC"), "event_count": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _same_principal(alert_principal: str | None, wanted: str) -> bool:
    if not alert_principal:
        return False
    if alert_principal == wanted:
        return True
    # A session ARN (assumed-role/<role>/<session>) belongs to the role the alert names.
    if ":assumed-role/" in wanted:
        role = wanted.split(":assumed-role/", 1)[1].split("/", 1)[0]
        return alert_principal.endswith(f":role/{role}") or alert_principal.endswith(f"/{role}")
    return alert_principal.endswith(f"/{wanted}")
