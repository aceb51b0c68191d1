"""Run an investigation: analyst input (`name=value` text, ISO or relative times) -> typed params -> Arrow.

Investigations are catalog queries of kind `investigations` (queries/investigations/<id>.sql + .yml). Every one
reads the window [since, until); both accept ISO times or times relative to `now` (`now`, `-24h`, `-7d`).
An investigation that declares `alert_id` gets its other values from the alert in the lake's outbox, because
the engine's session can read nothing but the lake's events. Nothing here reads the clock: `now` is passed in.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import catalog, lake
from pipeline.alerting.alert import Alert
from pipeline.alerting.outbox import Outbox, OutboxError
from pipeline.catalog import Query
from pipeline.engine import Engine
from pipeline.names import table as names_table
from pipeline.names.columns import with_names
from pipeline.names.resolve import NameIndex
from pipeline.times import TIME_HELP, check_window, iso, parse_time

log = logging.getLogger(__name__)

KIND = "investigations"
DEFAULT_SINCE = "-24h"
DEFAULT_UNTIL = "now"
WINDOW_PARAMS: tuple[str, ...] = ("since", "until")
# An alert's first/last seen are event times; pad them so the calls just around the alert show too.
EVIDENCE_PAD = dt.timedelta(minutes=5)


class InvestigationError(ValueError):
    """Bad input for an investigation; the message lists what is valid and what to do next."""


# --- times -----------------------------------------------------------------------------------------------------


# --- parameters ------------------------------------------------------------------------------------------------


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """`["key=alias/orders", "bucket=1h"]` -> dict. A name given twice or a pair without `=` is an error."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvestigationError(f"--param {pair!r}: write it as name=value, e.g. --param since=-24h")
        if name in values:
            raise InvestigationError(f"--param {name} is given twice")
        values[name] = value
    return values


def param_names(query: Query) -> list[str]:
    """Every name `--param` accepts for `query`: its declared params, the window, and trusted accounts if used."""
    names = [p.name for p in query.params] + list(WINDOW_PARAMS)
    if "trusted_accounts" in query.sql_names:
        names.append("trusted_accounts")
    return names


def describe_params(query: Query) -> list[tuple[str, str, str, str]]:
    """(name, type, default or "required", help) for every accepted name, for `query show` and errors."""
    rows = [(p.name, p.type, "required" if p.required else _text(p.default) or '""', p.help) for p in query.params]
    rows.append(("since", "timestamp", DEFAULT_SINCE, f"Start of the window (inclusive): {TIME_HELP}."))
    rows.append(("until", "timestamp", DEFAULT_UNTIL, "End of the window (exclusive), same forms as since."))
    if "trusted_accounts" in query.sql_names:
        rows.append(("trusted_accounts", "list[str]", "accounts in the lake", "Comma-separated trusted account ids."))
    return rows


def _listing(query: Query) -> str:
    return "; ".join(f"{name} ({type_}, {default})" for name, type_, default, _ in describe_params(query))


@dataclass(frozen=True)
class Investigation:
    """A query with its window and typed values, ready to run."""

    query: Query
    since: dt.datetime
    until: dt.datetime
    params: Mapping[str, Any]

    def bound(self) -> dict[str, Any]:
        """What the engine binds: declared params plus the window (and trusted accounts when given)."""
        return {**self.params, "since": self.since, "until": self.until}


def resolve(
    query: Query, given: Mapping[str, Any], *, now: dt.datetime, lake_path: Path | None = None
) -> Investigation:
    """Check and type the values for `query`: unknown or missing names are errors that list the valid ones.

    With `alert_id` among the query's params and a lake, the alert's fields fill in what was not given.
    """
    values = dict(given)
    if unknown := sorted(set(values) - set(param_names(query))):
        raise InvestigationError(
            f"{query.id} has no parameter {', '.join(unknown)}. Valid: {_listing(query)}. "
            f"See `keytrail query show {query.id}`."
        )
    if "alert_id" in values and lake_path is not None and any(p.name == "alert_id" for p in query.params):
        # The outbox's full id replaces a prefix; anything else given explicitly overrides the alert's value.
        values = {**values, **alert_values(lake_path, str(values["alert_id"]), query)} | {
            name: value for name, value in values.items() if name != "alert_id"
        }
    if missing := [p.name for p in query.params if p.required and p.name not in values]:
        raise InvestigationError(
            f"{query.id} needs {', '.join(missing)}. Valid: {_listing(query)}. Example: {example_command(query)}"
        )
    try:
        since = parse_time(values.pop("since", DEFAULT_SINCE), now)
        until = parse_time(values.pop("until", DEFAULT_UNTIL), now)
        for param in query.params:  # relative times for declared timestamp params too
            if param.type == "timestamp" and param.name in values:
                values[param.name] = parse_time(values[param.name], now)
        builtins = {"trusted_accounts": values.pop("trusted_accounts")} if "trusted_accounts" in values else {}
        typed = {**query.resolve_params(values), **builtins}
    except ValueError as exc:
        raise InvestigationError(f"{query.id}: {exc}") from None
    try:
        check_window(since, until)  # ordered, and inside the span the lake can hold
    except ValueError as exc:
        raise InvestigationError(f"{query.id}: {exc}") from None
    return Investigation(query=query, since=since, until=until, params=typed)


def alert_values(lake_path: Path, alert_id: str, query: Query) -> dict[str, Any]:
    """The outbox alert's fields (`alert_params`) that `query` accepts."""
    try:
        with Outbox.open(lake_path, create=False) as box:
            alert = box.find(alert_id).alert
    except OutboxError as exc:
        raise InvestigationError(str(exc)) from None
    accepted = set(param_names(query))
    return {name: value for name, value in alert_params(alert).items() if name in accepted}


def alert_params(alert: Alert) -> dict[str, Any]:
    """alert_evidence's values for an alert: full id, detection, principal, resource, source IP and its
    first/last seen padded by EVIDENCE_PAD."""
    return {
        "alert_id": alert.alert_id,
        "detection_id": alert.detection_id,
        "principal_arn": alert.principal_arn or "",
        "resource_arn": alert.resource_arn or "",
        "source_ip": _alert_source_ip(alert.context),
        "since": alert.first_seen - EVIDENCE_PAD,
        "until": alert.last_seen + EVIDENCE_PAD,
    }


def _alert_source_ip(context: Mapping[str, Any]) -> str:
    """The source IP an alert is about: a `source_ip` in its context, or the actor of an IP-keyed alert
    (access_denied_storm reports `actor_kind: source_ip`). Empty when the alert is about a principal."""
    if isinstance(context.get("source_ip"), str):
        return str(context["source_ip"])
    if context.get("actor_kind") == "source_ip" and isinstance(context.get("actor"), str):
        return str(context["actor"])
    return ""


# --- running ---------------------------------------------------------------------------------------------------


def load(queries_dir: Path | str | None = None) -> tuple[Query, ...]:
    """Every investigation of the catalog."""
    return catalog.load(KIND, queries_dir)


def get(query_id: str, queries_dir: Path | str | None = None) -> Query:
    """One investigation; the error lists the known ids."""
    try:
        return catalog.get(query_id, KIND, queries_dir)
    except KeyError as exc:
        raise InvestigationError(f"{exc.args[0]}. `keytrail query list` shows them all.") from None


def check_lake(lake_path: Path) -> Path:
    """The lake directory, or an error saying how to make one."""
    if not lake.events_dir(lake_path).is_dir():
        raise InvestigationError(
            f"no lake at {lake_path} (no events/ folder): pass --lake PATH or set KEYTRAIL_LAKE, "
            "or build one with `keytrail ingest SOURCE --lake PATH` (or `keytrail demo`)"
        )
    return lake_path


def run(lake_path: Path, investigation: Investigation) -> pa.Table:
    """Run a resolved investigation over the lake's partitions for its window (+ the query's lookback)."""
    query = investigation.query
    with Engine.for_lake(
        check_lake(lake_path), investigation.since, investigation.until, lookback=query.lookback
    ) as engine:
        table = engine.run(query, investigation.bound())
    log.info("%s: %d rows over %d files", query.id, table.num_rows, len(engine.files))
    # names beside ids (aliases, account names) as of each row's time, where the lake's names table knows them
    return with_names(table, NameIndex(names_table.read(Path(lake_path))), investigation.until)


def investigate(
    lake_path: Path | str,
    query_id: str,
    params: Mapping[str, Any] | None = None,
    *,
    now: dt.datetime,
    queries_dir: Path | str | None = None,
) -> pa.Table:
    """One call for notebooks and scripts: `investigate(lake, "key_usage", {"key": ...}, now=...)`."""
    lake_path = Path(lake_path)
    query = get(query_id, queries_dir)
    return run(lake_path, resolve(query, params or {}, now=now, lake_path=lake_path))


# --- examples ----------------------------------------------------------------------------------------------------


def example_command(query: Query, values: Mapping[str, Any] | None = None, *, lake_path: Path | None = None) -> str:
    """A ready-to-copy `keytrail query run` command line (the YAML example unless `values` are given)."""
    chosen = dict(query.example if values is None else values)
    words = ["keytrail", "query", "run", query.id]
    for name, value in chosen.items():
        words += ["--param", f"{name}={_text(value)}"]
    if lake_path is not None:
        words += ["--lake", str(lake_path)]
    return " ".join(shlex.quote(word) for word in words)


_UNITS: tuple[tuple[str, int], ...] = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _text(value: Any) -> str:
    """A value as `--param` takes it back."""
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, dt.timedelta):
        seconds = int(value.total_seconds())
        if seconds <= 0:
            return f"{seconds}s"
        unit, size = next((u, n) for u, n in _UNITS if seconds % n == 0)
        return f"{seconds // size}{unit}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)
