"""Run a query's YAML test cases: fixture events -> the real `events.normalize_many` -> Engine -> expected rows.

Shared by pytest (tests/test_cases.py) and `keytrail test [ID]`, so both judge a query the same way.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipeline import events
from pipeline.alerting.alert import Alert
from pipeline.catalog import Case, EventSpec, Query, Replace, default_queries_dir
from pipeline.detect import alerts_from_rows
from pipeline.engine import Engine
from pipeline.times import cloudtrail, iso, parse_timestamp

# Fixed namespace: the same case always yields the same eventIDs (stable across runs and machines).
_EVENT_ID_NAMESPACE = uuid.UUID("6b6a7e1c-2f5d-4c0e-9a57-6b657974726c")


def default_fixtures_dir() -> Path:
    """The base events cases start from: `queries/fixtures/events`, shipped inside the query tree (also in a wheel)."""
    return default_queries_dir() / "fixtures" / "events"


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case; `detail` is a readable diff when it failed."""

    query_id: str
    case_name: str
    firing: bool
    passed: bool
    detail: str
    rows: int
    seconds: float


def case_window(query: Query, case: Case) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) of a case: explicit, or `now` minus the detection window (investigations: lookback)."""
    if case.since is not None and case.until is not None:
        return case.since, case.until
    assert case.now is not None  # the catalog guarantees now or since+until
    span = query.window or query.lookback or dt.timedelta(hours=1)
    return case.now - span, case.now


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` merged into a copy of `base`: nested mappings merge, anything else (lists, `!replace`
    mappings) replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and not isinstance(value, Replace):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@cache
def _fixture(path: Path) -> str:
    return path.read_text()


def load_fixture(name: str) -> dict[str, Any]:
    """A base CloudTrail record from `<default_fixtures_dir()>/<name>.json` (a fresh copy each call)."""
    path = default_fixtures_dir() / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.json"))) or "none"
        raise FileNotFoundError(f"no base event fixture {path.name} in {path.parent} (known: {known})")
    return json.loads(_fixture(path))


def expand_events(specs: Sequence[EventSpec], *, key: str, default_start: dt.datetime) -> list[dict[str, Any]]:
    """CloudTrail records for a case's `events:` list, with deterministic unique eventIDs.

    Item i's copy j on day d happens at `start + d days + j * every`, where start is `at`, else the
    override's eventTime, else the case window's start. In the override's strings `{n}` becomes j and `{day}`
    becomes d, so one item can produce many distinct secrets, context values or principals.
    """
    records: list[dict[str, Any]] = []
    for index, spec in enumerate(specs):
        base = load_fixture(spec.base)
        record = deep_merge(base, spec.overrides)
        templated = _has_placeholder(spec.overrides)
        if spec.at is not None:
            start = spec.at
        elif "eventTime" in spec.overrides:
            start = parse_timestamp(spec.overrides["eventTime"])
        else:
            start = default_start
        for day in range(spec.days):
            for copy_index in range(spec.repeat):
                moment = start + dt.timedelta(days=day) + copy_index * spec.every
                # untemplated copies share nested parts read-only; only top-level keys change below
                fill = _fill(spec.overrides, copy_index, day) if templated else None
                copy_record = deep_merge(base, fill) if fill is not None else dict(record)
                copy_record["eventTime"] = cloudtrail(moment)
                copy_record["eventID"] = str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{key}/{index}/{day}/{copy_index}"))
                records.append(copy_record)
    return records


_PLACEHOLDERS = ("{n}", "{day}")


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return any(p in value for p in _PLACEHOLDERS)
    if isinstance(value, Mapping):
        return any(_has_placeholder(k) or _has_placeholder(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_placeholder(v) for v in value)
    return False


def _fill(value: Any, n: int, day: int) -> Any:
    """`{n}` -> the copy index, `{day}` -> the day index, in every string of an override (keys too)."""
    if isinstance(value, str):
        return value.replace("{n}", str(n)).replace("{day}", str(day))
    if isinstance(value, Mapping):
        filled = {_fill(k, n, day): _fill(v, n, day) for k, v in value.items()}
        return Replace(filled) if isinstance(value, Replace) else filled
    if isinstance(value, list):
        return [_fill(v, n, day) for v in value]
    return value


@dataclass(frozen=True)
class CaseInput:
    """What a case runs on: its normalized events, window, where its lake begins, and the params it binds."""

    table: pa.Table
    since: dt.datetime
    until: dt.datetime
    history_start: dt.datetime
    params: dict[str, Any]
    integrity: tuple[Mapping[str, Any], ...] = ()

    def engine(self) -> Engine:
        """A session over the case's events (the caller closes it); windows other than the case's bind as params."""
        return Engine.from_table(self.table, since=self.since, until=self.until, history_start=self.history_start,
                                 integrity=self.integrity)  # fmt: skip


def case_input(query: Query, case: Case) -> CaseInput:
    """The case's events through the real `events.normalize_many`, with its window and params."""
    since, until = case_window(query, case)
    records = expand_events(case.events, key=f"{query.id}/{case.name}", default_start=since)
    table = events.normalize_many(records, source_object=f"case:{query.id}")
    params: dict[str, Any] = dict(case.params)
    if case.trusted_accounts is not None:
        params["trusted_accounts"] = list(case.trusted_accounts)
    # Unless the case says otherwise, its lake is warmed up: history reaches a full lookback back.
    history_start = case.history_start or since - query.lookback
    return CaseInput(table, since, until, history_start, params, case.integrity)


def case_alerts(query: Query, given: CaseInput, windows: Sequence[tuple[dt.datetime, dt.datetime]]) -> list[Alert]:
    """The alerts of `query` run once per window over the case's events (one session), as detect would make them.

    One window over a range, or consecutive windows like scheduled runs: window invariance compares the two.
    """
    found: list[Alert] = []
    with given.engine() as engine:
        for since, until in windows:
            rows = engine.run(query, {**given.params, "since": since, "until": until}).to_pylist()
            found.extend(alerts_from_rows(query, rows))
    return found


def run_case(query: Query, case: Case) -> CaseResult:
    """Build the case's events, run the query over them, and compare with `expect`."""
    started = time.perf_counter()
    given = case_input(query, case)
    try:
        with given.engine() as engine:
            rows = engine.run(query, given.params).to_pylist()
    except (duckdb.Error, ValueError) as exc:  # a broken query is a failed case, not a crashed run
        rows, problems = [], [f"the query failed: {type(exc).__name__}: {exc}"]
    else:
        problems = compare_rows(case.expect, rows)
    return CaseResult(
        query_id=query.id,
        case_name=case.name,
        firing=case.firing,
        passed=not problems,
        detail=_report(query, case, problems, rows) if problems else "",
        rows=len(rows),
        seconds=time.perf_counter() - started,
    )


# --- comparison ------------------------------------------------------------------------------------------------


def _same(expected: Any, actual: Any) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(actual, dt.datetime):
        try:
            return parse_timestamp(expected) == actual.astimezone(dt.UTC)
        except ValueError:
            return False
    if isinstance(actual, bool) or isinstance(expected, bool):
        return expected is actual
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return math.isclose(float(expected), float(actual), rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(actual, list | tuple) and isinstance(expected, list | tuple):
        return len(actual) == len(expected) and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return expected.keys() == actual.keys() and all(_same(expected[k], actual[k]) for k in expected)
    return bool(expected == actual)


def compare_rows(expected: Sequence[Mapping[str, Any]], actual: Sequence[Mapping[str, Any]]) -> list[str]:
    """Problems found matching expected rows (subsets of columns) to actual rows, order-insensitively."""
    problems: list[str] = []
    columns = set(actual[0]) if actual else set()
    for row in expected:
        if actual and (missing := sorted(set(row) - columns)):
            problems.append(f"expected column(s) {', '.join(missing)} not in the output ({', '.join(sorted(columns))})")
    if problems:
        return problems
    unmatched = list(actual)
    for row in expected:
        match = next((a for a in unmatched if all(_same(v, a.get(k)) for k, v in row.items())), None)
        if match is None:
            problems.append(f"no output row matches {_show(row)}")
        else:
            unmatched.remove(match)
    for row in unmatched:
        problems.append(f"unexpected output row {_show(_project(row, expected))}")
    return problems


def _project(row: Mapping[str, Any], expected: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = [k for e in expected for k in e] or list(row)
    return {k: row.get(k) for k in dict.fromkeys(keys)}


def _show(row: Mapping[str, Any]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, dt.datetime):
            return iso(value)
        return repr(value)

    return "{" + ", ".join(f"{k}: {text(v)}" for k, v in row.items()) + "}"


def _report(query: Query, case: Case, problems: list[str], rows: list[dict[str, Any]]) -> str:
    lines = [f"{query.id} / {case.name!r} ({query.yml_path.name}): expected {len(case.expect)} row(s), got {len(rows)}"]
    lines += [f"  - {p}" for p in problems]
    if rows:
        lines.append("  actual rows:")
        lines += [f"    {_show(_project(r, case.expect))}" for r in rows[:20]]
        if len(rows) > 20:
            lines.append(f"    ... {len(rows) - 20} more")
    return "\n".join(lines)
