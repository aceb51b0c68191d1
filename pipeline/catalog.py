"""Discover `queries/**/<id>.sql` + `<id>.yml` pairs and load them as frozen, strictly validated `Query` objects.

Nothing is registered at import time: `load()` walks the tree each time it is called. Validation happens when a
pair is loaded, so a malformed pair fails loudly (file + key named) instead of misbehaving at detection time.
The YAML format is documented in `queries/README.md`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.alerts import SEVERITIES
from pipeline.times import parse_duration, parse_timestamp

KINDS: tuple[str, ...] = ("detections", "investigations", "analysis")

# Names the engine binds itself; a query uses them without declaring them (see queries/README.md).
BUILTINS: frozenset[str] = frozenset(
    {"since", "until", "baseline_start", "window", "trusted_accounts", "history_start"}
)

PARAM_TYPES: tuple[str, ...] = ("int", "float", "str", "bool", "duration", "timestamp", "list[str]")

_COMMON_REQUIRED = ("id", "title", "description", "params", "tests")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "detections": (
        *_COMMON_REQUIRED,
        "severity",
        "window",
        "lookback",
        "dedup",
        "attack",
        "runbook",
        "false_positives",
    ),
    "investigations": (*_COMMON_REQUIRED, "next_steps"),
    "analysis": (*_COMMON_REQUIRED, "next_steps"),  # summaries for notebooks/report: investigation rules
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "detections": ("enabled", "realert"),
    "investigations": ("lookback", "attack", "example"),
    "analysis": ("lookback", "example"),
}
_PARAM_KEYS = frozenset({"type", "default", "help", "required"})
_CASE_KEYS = frozenset(
    {"name", "now", "since", "until", "history_start", "params", "trusted_accounts", "events", "expect"}
)
_EVENT_KEYS = frozenset({"base", "with", "at", "repeat", "every", "days"})

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_ATTACK = re.compile(r"^(T\d{4}(\.\d{3})?|TA\d{4})$")


class CatalogError(ValueError):
    """A query pair is malformed; the message names the file and the offending key."""


@dataclass(frozen=True)
class Param:
    """A typed query parameter. Detections always have a default; investigations may mark one required."""

    name: str
    type: str
    help: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class EventSpec:
    """One `events:` item of a test case: a base fixture, an override, and how to repeat it in time."""

    base: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    at: dt.datetime | None = None
    repeat: int = 1
    every: dt.timedelta = dt.timedelta(seconds=1)
    days: int = 1


@dataclass(frozen=True)
class Case:
    """A YAML test case: given events (+ window, params) -> expected rows (`()` means the query stays quiet)."""

    name: str
    events: tuple[EventSpec, ...]
    expect: tuple[Mapping[str, Any], ...]
    now: dt.datetime | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    trusted_accounts: tuple[str, ...] | None = None
    # Where the case's lake starts; default: a full lookback before the window (a warmed-up lake).
    history_start: dt.datetime | None = None

    @property
    def firing(self) -> bool:
        return bool(self.expect)


@dataclass(frozen=True)
class Query:
    """A validated SQL + YAML pair. Detection-only fields are None/empty for investigations."""

    id: str
    kind: str
    title: str
    description: str
    sql: str
    sql_path: Path
    yml_path: Path
    params: tuple[Param, ...]
    sql_names: frozenset[str]
    tests: tuple[Case, ...]
    severity: str | None = None
    window: dt.timedelta | None = None
    lookback: dt.timedelta = dt.timedelta(0)
    dedup: tuple[str, ...] = ()
    attack: tuple[str, ...] = ()
    runbook: str = ""
    false_positives: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    example: Mapping[str, Any] = field(default_factory=dict)  # investigations: param values for `query show`
    enabled: bool = True
    realert: dt.timedelta | None = None  # detections: how long the same finding stays quiet after it paged

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        known = ", ".join(p.name for p in self.params) or "none"
        raise KeyError(f"{self.id} has no parameter {name!r} (declared: {known})")

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Declared params with defaults applied and every value coerced to its declared type."""
        overrides = dict(overrides or {})
        resolved: dict[str, Any] = {}
        for param in self.params:
            if param.name in overrides:
                resolved[param.name] = coerce(param.type, overrides.pop(param.name), where=f"{self.id}.{param.name}")
            elif param.required:
                raise ValueError(f"{self.id} needs parameter {param.name!r} ({param.type}): {param.help}")
            else:
                resolved[param.name] = param.default
        if overrides:
            unknown = ", ".join(sorted(overrides))
            declared = ", ".join(p.name for p in self.params) or "none"
            raise ValueError(f"{self.id} has no parameter(s) {unknown} (declared: {declared})")
        return resolved


# --- value coercion (shared by YAML defaults, case params, CLI --param and the engine) ----------------------


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(type_: str, value: Any, *, where: str = "value") -> Any:
    """Coerce `value` to a param type; raises ValueError naming `where`. Strings (CLI input) are parsed."""
    try:
        return _coerce(type_, value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _coerce(type_: str, value: Any) -> Any:
    if type_ in ("int", "float"):
        accepted = (int, str) if type_ == "int" else (int, float, str)
        try:
            if isinstance(value, bool) or not isinstance(value, accepted):
                raise ValueError
            return int(value) if type_ == "int" else float(value)
        except ValueError:
            raise ValueError(f"expected {'an int' if type_ == 'int' else 'a number'}, got {value!r}") from None
    if type_ == "str":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true/false, got {value!r}")
    if type_ == "duration":
        return parse_duration(value)
    if type_ == "timestamp":
        return parse_timestamp(value)
    if type_ == "list[str]":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return list(value)
        raise ValueError(f"expected a list of strings, got {value!r}")
    raise ValueError(f"unknown type {type_!r} (one of {', '.join(PARAM_TYPES)})")


# --- SQL parameter discovery ---------------------------------------------------------------------------------

# Skips string literals, quoted identifiers and comments so '$.Statement' (a JSON path) is not a parameter.
_SQL_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$([A-Za-z_][A-Za-z0-9_]*)|\$\d+|\?""",
    re.DOTALL,
)


def sql_parameters(sql: str) -> frozenset[str]:
    """The `$name` parameters a SQL text uses (outside strings and comments). Positional ones are refused."""
    names: set[str] = set()
    for match in _SQL_TOKENS.finditer(sql):
        token = match.group(0)
        if token == "?" or (token.startswith("$") and token[1:].isdigit()):
            raise ValueError(f"positional parameter {token!r}: use a named $parameter")
        if match.group(1):
            names.add(match.group(1))
    return frozenset(names)


# --- loading ---------------------------------------------------------------------------------------------------


def default_queries_dir() -> Path:
    """`queries/` of the repository (or the copy packaged as pipeline/_queries in a wheel)."""
    packaged = Path(__file__).resolve().parent / "_queries"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "queries"


def load(kind: str | None = None, queries_dir: Path | str | None = None) -> tuple[Query, ...]:
    """Every query pair of `kind` (or of all kinds), sorted by id. Raises CatalogError listing every bad pair."""
    root = Path(queries_dir) if queries_dir is not None else default_queries_dir()
    kinds = KINDS if kind is None else (kind,)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not root.is_dir():
        raise CatalogError(f"{root}: queries directory not found (pass queries_dir=... or --queries DIR)")
    queries: list[Query] = []
    errors: list[str] = []
    for each in kinds:
        folder = root / each
        stems = {p.with_suffix("") for p in folder.rglob("*.sql")} | {p.with_suffix("") for p in folder.rglob("*.yml")}
        for stem in sorted(stems):
            try:
                queries.append(load_pair(stem.with_suffix(".sql"), kind=each))
            except CatalogError as exc:
                errors.append(str(exc))
    seen: dict[str, Path] = {}
    for query in queries:
        if query.id in seen:
            errors.append(f"{query.yml_path}: id {query.id!r} is already used by {seen[query.id]}")
        seen[query.id] = query.yml_path
    if errors:
        raise CatalogError("invalid query catalog:\n  " + "\n  ".join(errors))
    return tuple(sorted(queries, key=lambda q: q.id))


def get(query_id: str, kind: str | None = None, queries_dir: Path | str | None = None) -> Query:
    """One query by id; the KeyError lists the known ids."""
    queries = load(kind, queries_dir)
    for query in queries:
        if query.id == query_id:
            return query
    raise KeyError(f"no query {query_id!r}; known: {', '.join(q.id for q in queries)}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:  # explicit keys only: `<<: *anchor` merges may be overridden on purpose
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


class Replace(dict[str, Any]):
    """A `with:` mapping tagged `!replace`: it replaces the base record's mapping instead of merging into it."""


def _replace(loader: _StrictLoader, node: yaml.MappingNode) -> Replace:
    return Replace(_no_duplicates(loader, node, deep=True))


_StrictLoader.add_constructor("!replace", _replace)


def load_pair(sql_path: Path | str, *, kind: str) -> Query:
    """Load and validate one `<id>.sql` + `<id>.yml` pair of `kind`."""
    sql_path = Path(sql_path)
    yml_path = sql_path.with_suffix(".yml")
    for path in (sql_path, yml_path):
        if not path.is_file():
            raise CatalogError(f"{path}: missing ({sql_path.name} and {yml_path.name} go together)")
    try:
        spec = yaml.load(yml_path.read_text(), Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogError(f"{yml_path}: invalid YAML: {exc}") from None
    return _build(spec, sql_path.read_text(), sql_path, yml_path, kind)


def _build(spec: Any, sql: str, sql_path: Path, yml_path: Path, kind: str) -> Query:
    def fail(message: str) -> CatalogError:
        return CatalogError(f"{yml_path}: {message}")

    if not isinstance(spec, dict):
        raise fail("top level must be a mapping")
    _reject_unknown(spec, {*_REQUIRED[kind], *_OPTIONAL[kind]}, "", fail)
    for key in _REQUIRED[kind]:
        if key not in spec:
            raise fail(f"missing required key {key!r}")
    if spec["id"] != sql_path.stem:
        raise fail(f"id {spec['id']!r} must equal the file stem {sql_path.stem!r}")
    if not isinstance(spec["id"], str) or not _ID.match(spec["id"]):
        raise fail(f"id {spec['id']!r} must be lower_snake_case")
    for key in ("title", "description"):
        _text(spec[key], key, fail)
    if not sql.lstrip().startswith("--"):
        raise CatalogError(f"{sql_path}: must start with a comment saying why the query exists")

    params = tuple(_param(name, body, kind, fail) for name, body in _mapping(spec["params"], "params", fail).items())
    try:
        used = sql_parameters(sql)
    except ValueError as exc:
        raise CatalogError(f"{sql_path}: {exc}") from None
    declared = {p.name for p in params}
    if undeclared := sorted(used - declared - BUILTINS):
        names = ", ".join("$" + n for n in undeclared)
        raise fail(f"{names} used in {sql_path.name} but not declared under params (built-ins: {_builtins()})")
    if unused := sorted(declared - used):
        raise fail(f"params {', '.join(unused)} declared but never used as $name in {sql_path.name}")

    tests = _list(spec["tests"], "tests", fail)
    if not tests:
        raise fail("tests: needs at least one case")
    cases = tuple(_case(i, item, declared, fail) for i, item in enumerate(tests))
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise fail("tests: case names must be unique")

    common: dict[str, Any] = {
        "id": spec["id"],
        "kind": kind,
        "title": spec["title"].strip(),
        "description": spec["description"].strip(),
        "sql": sql,
        "sql_path": sql_path,
        "yml_path": yml_path,
        "params": params,
        "sql_names": used,
        "tests": cases,
    }
    if "attack" in spec:
        common["attack"] = tuple(_attack(spec["attack"], fail))
    if kind != "detections":  # investigations and analysis queries
        if "lookback" in spec:
            common["lookback"] = _duration(spec["lookback"], "lookback", fail)
        return Query(
            **common,
            next_steps=tuple(_strings(spec["next_steps"], "next_steps", fail, nonempty=True)),
            example=_example(spec.get("example"), params, fail),
        )

    if spec["severity"] not in SEVERITIES:
        raise fail(f"severity {spec['severity']!r} must be one of {', '.join(SEVERITIES)}")
    window = _duration(spec["window"], "window", fail)
    if window <= dt.timedelta(0):
        raise fail("window must be longer than 0s")
    dedup = tuple(_strings(spec["dedup"], "dedup", fail, nonempty=True))
    for column in dedup:
        if not _ID.match(column):
            raise fail(f"dedup column {column!r} must be a plain lower_snake_case column name")
    firing = [c.name for c in cases if c.firing]
    quiet = [c.name for c in cases if not c.firing]
    if not firing:
        raise fail("tests: a detection needs at least one firing case (non-empty expect)")
    if not quiet:
        raise fail("tests: a detection needs at least one quiet case (expect: [])")
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("enabled must be true or false")
    return Query(
        **common,
        severity=spec["severity"],
        window=window,
        lookback=_duration(spec["lookback"], "lookback", fail),
        dedup=dedup,
        runbook=_text(spec["runbook"], "runbook", fail),
        false_positives=tuple(_strings(spec["false_positives"], "false_positives", fail, nonempty=True)),
        enabled=enabled,
        realert=_duration(spec["realert"], "realert", fail) if "realert" in spec else None,
    )


def realert_intervals(queries: Iterable[Query], default: dt.timedelta) -> dict[str, dt.timedelta]:
    """Per-detection re-alert intervals for the outbox: each detection's `realert`, `*` for the rest."""
    intervals = {query.id: query.realert for query in queries if query.realert is not None}
    return {"*": default, **intervals}


def _example(value: Any, params: Sequence[Param], fail: Any) -> dict[str, Any]:
    """An investigation's example values: declared params (every required one) or window built-ins, valid types."""
    example = _mapping(value, "example", fail)
    types = {p.name: p.type for p in params} | {"since": "timestamp", "until": "timestamp"}
    for name, item in example.items():
        if name not in types:
            raise fail(f"example: {name!r} is not a declared param (nor since/until)")
        # Relative times (-24h, now) are resolved later against the clock; check only absolute ones here.
        if not (types[name] == "timestamp" and isinstance(item, str) and not item[:1].isdigit()):
            try:
                coerce(types[name], item, where=f"example.{name}")
            except ValueError as exc:
                raise fail(str(exc)) from None
    if missing := [p.name for p in params if p.required and p.name not in example]:
        raise fail(f"example: give a value for every required param (missing: {', '.join(missing)})")
    return example


def _builtins() -> str:
    return ", ".join("$" + n for n in sorted(BUILTINS))


def _reject_unknown(mapping: Mapping[str, Any], allowed: Iterable[str], where: str, fail: Any) -> None:
    allowed = sorted(allowed)
    for key in mapping:
        if key not in allowed:
            raise fail(f"{where}unknown key {key!r} (allowed: {', '.join(allowed)})")


def _text(value: Any, key: str, fail: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{key} must be non-empty text")
    return value.strip()


def _mapping(value: Any, key: str, fail: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"{key} must be a mapping")
    return value


def _list(value: Any, key: str, fail: Any) -> list[Any]:
    if not isinstance(value, list):
        raise fail(f"{key} must be a list")
    return value


def _strings(value: Any, key: str, fail: Any, *, nonempty: bool = False) -> list[str]:
    items = _list(value, key, fail)
    if nonempty and not items:
        raise fail(f"{key} must list at least one item")
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise fail(f"{key} must be a list of non-empty strings")
    return [item.strip() for item in items]


def _attack(value: Any, fail: Any) -> list[str]:
    ids = _strings(value, "attack", fail, nonempty=True)
    for item in ids:
        if not _ATTACK.match(item):
            raise fail(f"attack id {item!r} is not a MITRE ATT&CK id (T1234, T1234.001 or TA0001)")
    return ids


def _duration(value: Any, key: str, fail: Any) -> dt.timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise fail(f"{key}: {exc}") from None


def _param(name: Any, body: Any, kind: str, fail: Any) -> Param:
    if not isinstance(name, str) or not _ID.match(name):
        raise fail(f"params: {name!r} must be a lower_snake_case name")
    if name in BUILTINS:
        raise fail(f"params.{name}: is an engine built-in ({_builtins()}); do not declare it")
    if not isinstance(body, dict):
        raise fail(f"params.{name} must be a mapping with type, default, help")
    _reject_unknown(body, _PARAM_KEYS, f"params.{name}: ", fail)
    type_ = body.get("type")
    if type_ not in PARAM_TYPES:
        raise fail(f"params.{name}.type {type_!r} must be one of {', '.join(PARAM_TYPES)}")
    help_text = _text(body.get("help"), f"params.{name}.help", fail)
    required = body.get("required", False)
    if not isinstance(required, bool):
        raise fail(f"params.{name}.required must be true or false")
    if required and kind == "detections":
        raise fail(f"params.{name}: detections run unattended, so every param needs a default (not required)")
    if required and "default" in body:
        raise fail(f"params.{name}: a required param has no default")
    if not required and "default" not in body:
        raise fail(f"params.{name}: needs a default (or required: true for an investigation)")
    default = None
    if "default" in body:
        try:
            default = coerce(type_, body["default"], where=f"params.{name}.default")
        except ValueError as exc:
            raise fail(str(exc)) from None
    return Param(name=name, type=type_, help=help_text, default=default, required=required)


def _case(index: int, item: Any, declared: Iterable[str], fail: Any) -> Case:
    where = f"tests[{index}]"
    if not isinstance(item, dict):
        raise fail(f"{where} must be a mapping")
    _reject_unknown(item, _CASE_KEYS, f"{where}: ", fail)
    for key in ("name", "events", "expect"):
        if key not in item:
            raise fail(f"{where}: missing required key {key!r}")
    name = _text(item["name"], f"{where}.name", fail)
    where = f"tests[{name!r}]"
    if ("now" in item) == ("since" in item or "until" in item):
        raise fail(f"{where}: give either `now` or both `since` and `until`")
    if ("since" in item) != ("until" in item):
        raise fail(f"{where}: `since` and `until` go together")
    try:
        times = {key: parse_timestamp(item[key]) for key in ("now", "since", "until", "history_start") if key in item}
    except ValueError as exc:
        raise fail(f"{where}: {exc}") from None
    params = _mapping(item.get("params"), f"{where}.params", fail)
    if unknown := sorted(set(params) - set(declared)):
        raise fail(f"{where}.params: {', '.join(unknown)} not declared under params")
    trusted = item.get("trusted_accounts")
    if trusted is not None:
        trusted = tuple(_strings(trusted, f"{where}.trusted_accounts", fail))
    expect = _list(item["expect"], f"{where}.expect", fail)
    if not all(isinstance(row, dict) and row for row in expect):
        raise fail(f"{where}.expect must be a list of non-empty mappings (or [] for a quiet case)")
    events = _list(item["events"], f"{where}.events", fail)
    return Case(
        name=name,
        events=tuple(_event(i, e, f"{where}.events", fail) for i, e in enumerate(events)),
        expect=tuple(expect),
        params=params,
        trusted_accounts=trusted,
        **times,
    )


def _event(index: int, item: Any, where: str, fail: Any) -> EventSpec:
    where = f"{where}[{index}]"
    if not isinstance(item, dict):
        raise fail(f"{where} must be a mapping")
    _reject_unknown(item, _EVENT_KEYS, f"{where}: ", fail)
    base = item.get("base")
    if not isinstance(base, str) or not _ID.match(base):
        raise fail(f"{where}.base must name a fixture in tests/fixtures/events (e.g. kms_decrypt)")
    overrides = _mapping(item.get("with"), f"{where}.with", fail)
    counts: dict[str, int] = {}
    for key in ("repeat", "days"):
        value = item.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail(f"{where}.{key} must be a positive integer")
        counts[key] = value
    every = _duration(item.get("every", "1s"), f"{where}.every", fail)
    if every < dt.timedelta(seconds=1):
        raise fail(f"{where}.every must be at least 1s (CloudTrail times have whole seconds)")
    try:
        at = parse_timestamp(item["at"]) if "at" in item else None
    except ValueError as exc:
        raise fail(f"{where}.at: {exc}") from None
    return EventSpec(base=base, overrides=overrides, at=at, every=every, **counts)
