"""The YAML half of a query pair: its shape as msgspec Structs, and the checks that span several keys.

`build(...)` turns a YAML-loaded document into a `query.Query` or raises `SpecError` (a friendly message plus
the path of the offending key, so the caller can name the file and line). msgspec enforces the keys (unknown
and missing ones), the types and the simple formats; the rest (id = stem, params = the SQL's `$names`, firing
and quiet cases, durations and times) is checked below. The format is documented in `queries/README.md`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType, field

from pipeline.alerting.alert import SEVERITIES
from pipeline.params import BUILTINS, PARAM_TYPES, coerce
from pipeline.query import Case, EventSpec, Param, Query
from pipeline.times import DURATION_HELP, parse_duration, parse_timestamp
from pipeline.validation import KeyPath, SpecError, convert, dotted

NAME = r"^[a-z][a-z0-9_]*$"
ATTACK_ID = r"^(T\d{4}(\.\d{3})?|TA\d{4})$"

# Constrained values, each with the error people see ({where}: the key path, {value}: what the file says).
Name = Annotated[str, Meta(pattern=NAME, extra={"error": "{where}: {value!r} must be lower_snake_case"})]
_NOT_ATTACK = "{where}: {value!r} is not a MITRE ATT&CK id (T1234, T1234.001 or TA0001)"
AttackId = Annotated[str, Meta(pattern=ATTACK_ID, extra={"error": _NOT_ATTACK})]
Text = Annotated[str, Meta(pattern=r"\S", extra={"error": "{where} must be non-empty text"})]
Count = Annotated[int, Meta(ge=1, extra={"error": "{where} must be a positive integer"})]
NonEmpty = Meta(min_length=1, extra={"error": "{where} must list at least one item"})
Row = Annotated[dict[str, Any], Meta(min_length=1, extra={"error": "{where} must be a non-empty mapping"})]
# Durations ("1h", or whole seconds) and times stay as written and are parsed by pipeline.times, their one
# parser. Times are `Any`: YAML gives a datetime, a date or a string, and a msgspec union holds only one of them.
Duration = Annotated[str | int, Meta(description=DURATION_HELP)]


class _Strict(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Unknown keys are errors everywhere (a typo must not silently mean 'use the default')."""


class ParamSpec(_Strict):
    type: str
    help: Text
    default: Any = UNSET
    required: bool = False


class EventItemSpec(_Strict):
    base: Name  # a fixture in queries/fixtures/events
    with_: dict[str, Any] | None = field(name="with", default=None)
    at: Any = UNSET
    repeat: Count = 1
    every: Duration = "1s"
    days: Count = 1


class CaseSpec(_Strict):
    name: Text
    events: list[EventItemSpec]
    expect: list[Row]
    now: Any = UNSET
    since: Any = UNSET
    until: Any = UNSET
    history_start: Any = UNSET
    params: dict[str, Any] | None = None
    trusted_accounts: list[Text] | None = None
    # Rows of the lake's `integrity` table (what `keytrail verify` recorded), for detections that read it.
    integrity: list[Row] | None = None


class QuerySpec(_Strict):
    id: Name
    title: Text
    description: Text
    # Values are converted to ParamSpec one by one in _params, so an error names the param: msgspec would
    # report `$.params[...]`.
    params: dict[Name, Any] | None
    tests: Annotated[list[CaseSpec], NonEmpty]


class DetectionSpec(QuerySpec):
    severity: str
    window: Duration
    lookback: Duration
    dedup: Annotated[list[Name], NonEmpty]
    attack: Annotated[list[AttackId], NonEmpty]
    runbook: Text
    false_positives: Annotated[list[Text], NonEmpty]
    enabled: bool = True
    realert: Duration | UnsetType = UNSET


class AnalysisSpec(QuerySpec):
    """Summaries for notebooks, the report and `query show` examples: an investigation without ATT&CK ids."""

    next_steps: Annotated[list[Text], NonEmpty]
    lookback: Duration | UnsetType = UNSET
    example: dict[str, Any] | None = None


class InvestigationSpec(AnalysisSpec):
    attack: Annotated[list[AttackId], NonEmpty] | UnsetType = UNSET


# The query kinds (folders under queries/) and the YAML shape of each.
SPECS: dict[str, type[QuerySpec]] = {
    "detections": DetectionSpec,
    "investigations": InvestigationSpec,
    "analysis": AnalysisSpec,
}


def build(data: Any, *, kind: str, sql: str, sql_names: frozenset[str], sql_path: Path, yml_path: Path) -> Query:
    """The Query a YAML document (+ its SQL) describes; SpecError names the first broken rule."""
    spec = convert(data, SPECS[kind])
    if spec.id != sql_path.stem:
        raise SpecError(("id",), f"id {spec.id!r} must equal the file stem {sql_path.stem!r}")
    params = _params(spec.params or {}, detection=isinstance(spec, DetectionSpec))
    declared = {p.name for p in params}
    if undeclared := sorted(sql_names - declared - BUILTINS):
        names = ", ".join("$" + n for n in undeclared)
        message = f"{names} used in {sql_path.name} but not declared under params (built-ins: {_builtins()})"
        raise SpecError(("params",), message)
    if unused := sorted(declared - sql_names):
        raise SpecError(("params",), f"params {', '.join(unused)} declared but never used as $name in {sql_path.name}")
    cases = tuple(_case(("tests", i), case, declared) for i, case in enumerate(spec.tests))
    if len({c.name for c in cases}) != len(cases):
        raise SpecError(("tests",), "tests: case names must be unique")
    common: dict[str, Any] = {
        "id": spec.id,
        "kind": kind,
        "title": spec.title.strip(),
        "description": spec.description.strip(),
        "sql": sql,
        "sql_path": sql_path,
        "yml_path": yml_path,
        "params": params,
        "sql_names": sql_names,
        "tests": cases,
    }
    if isinstance(spec, DetectionSpec):
        return _detection(spec, common)
    assert isinstance(spec, AnalysisSpec)
    attack = spec.attack if isinstance(spec, InvestigationSpec) else UNSET
    return Query(
        **common,
        lookback=dt.timedelta(0) if spec.lookback is UNSET else _duration(spec.lookback, ("lookback",)),
        attack=() if attack is UNSET else _stripped(attack),
        next_steps=_stripped(spec.next_steps),
        example=_example(spec.example or {}, params),
    )


def _detection(spec: DetectionSpec, common: dict[str, Any]) -> Query:
    if spec.severity not in SEVERITIES:
        raise SpecError(("severity",), f"severity {spec.severity!r} must be one of {', '.join(SEVERITIES)}")
    window = _duration(spec.window, ("window",))
    cases: tuple[Case, ...] = common["tests"]
    if not any(c.firing for c in cases):
        raise SpecError(("tests",), "tests: a detection needs at least one firing case (non-empty expect)")
    if all(c.firing for c in cases):
        raise SpecError(("tests",), "tests: a detection needs at least one quiet case (expect: [])")
    query = Query(
        **common,
        severity=spec.severity,
        window=window,
        lookback=_duration(spec.lookback, ("lookback",)),
        dedup=_stripped(spec.dedup),
        attack=_stripped(spec.attack),
        runbook=spec.runbook.strip(),
        false_positives=_stripped(spec.false_positives),
        enabled=spec.enabled,
        realert=None if spec.realert is UNSET else _duration(spec.realert, ("realert",)),
    )
    try:
        query.check_window(window)
    except ValueError as exc:
        raise SpecError(("window",), str(exc).removeprefix(f"{spec.id}.window: ")) from None
    return query


def _params(specs: Mapping[str, Any], *, detection: bool) -> tuple[Param, ...]:
    params: list[Param] = []
    for name, body in specs.items():
        path, where = ("params", name), f"params.{name}"
        if name in BUILTINS:
            raise SpecError(path, f"{where}: is an engine built-in ({_builtins()}); do not declare it")
        spec = convert(body, ParamSpec, path)
        if spec.type not in PARAM_TYPES:
            raise SpecError((*path, "type"), f"{where}.type {spec.type!r} must be one of {', '.join(PARAM_TYPES)}")
        has_default = spec.default is not UNSET
        if spec.required and detection:
            raise SpecError(path, f"{where}: detections run unattended, so every param needs a default (not required)")
        if spec.required and has_default:
            raise SpecError(path, f"{where}: a required param has no default")
        if not spec.required and not has_default:
            raise SpecError(path, f"{where}: needs a default (or required: true for an investigation)")
        default = _coerced(spec.type, spec.default, (*path, "default")) if has_default else None
        params.append(Param(name=name, type=spec.type, help=spec.help.strip(), default=default, required=spec.required))
    return tuple(params)


def _case(path: KeyPath, spec: CaseSpec, declared: set[str]) -> Case:
    where = dotted(path)
    given = {k: getattr(spec, k) for k in ("now", "since", "until", "history_start") if getattr(spec, k) is not UNSET}
    if ("now" in given) == ("since" in given or "until" in given):
        raise SpecError(path, f"{where}: give either `now` or both `since` and `until`")
    if ("since" in given) != ("until" in given):
        raise SpecError(path, f"{where}: `since` and `until` go together")
    times = {key: _timestamp(value, (*path, key)) for key, value in given.items()}
    params = spec.params or {}
    if unknown := sorted(set(params) - declared):
        raise SpecError((*path, "params"), f"{where}.params: {', '.join(unknown)} not declared under params")
    trusted = None if spec.trusted_accounts is None else _stripped(spec.trusted_accounts)
    return Case(
        name=spec.name.strip(),
        events=tuple(_event((*path, "events", i), item) for i, item in enumerate(spec.events)),
        expect=tuple(spec.expect),
        params=params,
        trusted_accounts=trusted,
        integrity=tuple(spec.integrity or ()),
        **times,
    )


def _event(path: KeyPath, spec: EventItemSpec) -> EventSpec:
    every = _duration(spec.every, (*path, "every"))
    if every < dt.timedelta(seconds=1):
        message = f"{dotted(path)}.every must be at least 1s (CloudTrail times have whole seconds)"
        raise SpecError((*path, "every"), message)
    at = None if spec.at is UNSET else _timestamp(spec.at, (*path, "at"))
    return EventSpec(base=spec.base, overrides=spec.with_ or {}, at=at, repeat=spec.repeat, every=every, days=spec.days)


def _example(example: dict[str, Any], params: tuple[Param, ...]) -> dict[str, Any]:
    """An investigation's example values: declared params (every required one) or window built-ins, valid types."""
    types = {p.name: p.type for p in params} | {"since": "timestamp", "until": "timestamp"}
    for name, item in example.items():
        if name not in types:
            raise SpecError(("example", name), f"example: {name!r} is not a declared param (nor since/until)")
        # Relative times (-24h, now) are resolved later against the clock; check only absolute ones here.
        if not (types[name] == "timestamp" and isinstance(item, str) and not item[:1].isdigit()):
            _coerced(types[name], item, ("example", name))
    if missing := [p.name for p in params if p.required and p.name not in example]:
        raise SpecError(("example",), f"example: give a value for every required param (missing: {', '.join(missing)})")
    return example


def _coerced(type_: str, value: Any, path: KeyPath) -> Any:
    try:
        return coerce(type_, value, where=dotted(path))
    except ValueError as exc:
        raise SpecError(path, str(exc)) from None


def _duration(value: Any, path: KeyPath) -> dt.timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise SpecError(path, f"{dotted(path)}: {exc}") from None


def _timestamp(value: Any, path: KeyPath) -> dt.datetime:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise SpecError(path, f"{dotted(path)}: {exc}") from None


def _stripped(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(item.strip() for item in items)


def _builtins() -> str:
    return ", ".join("$" + n for n in sorted(BUILTINS))
