"""Discover `queries/**/<id>.sql` + `<id>.yml` pairs and load them as frozen, strictly validated `Query` objects.

Nothing is registered at import time: `load()` walks the tree each time it is called. Validation happens when a
pair is loaded (`query_spec`), so a malformed pair fails loudly, naming the file, line and key
(`detections/x.yml:42: tests[2].events[0].repeat must be a positive integer`), instead of misbehaving at
detection time. The YAML format is documented in `queries/README.md`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pipeline import query_spec, sql_files
from pipeline.params import BUILTINS, coerce, sql_parameters
from pipeline.query import Case, EventSpec, Param, Query
from pipeline.validation import KeyPath, SpecError

# The public face of the query objects: callers import them from here.
__all__ = [
    "BUILTINS",
    "KINDS",
    "Case",
    "CatalogError",
    "EventSpec",
    "Param",
    "Query",
    "Replace",
    "coerce",
    "default_queries_dir",
    "get",
    "line_of",
    "load",
    "load_pair",
    "read_yaml",
    "realert_intervals",
    "sql_parameters",
]

KINDS: tuple[str, ...] = tuple(query_spec.SPECS)


class CatalogError(ValueError):
    """A query pair is malformed; the message names the file (and line) and the offending key."""


def default_queries_dir() -> Path:
    """`queries/` of the repository (or the copy packaged as pipeline/_queries in a wheel)."""
    return sql_files.queries_dir()


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


def load_pair(sql_path: Path | str, *, kind: str) -> Query:
    """Load and validate one `<id>.sql` + `<id>.yml` pair of `kind`."""
    sql_path = Path(sql_path)
    yml_path = sql_path.with_suffix(".yml")
    for path in (sql_path, yml_path):
        if not path.is_file():
            raise CatalogError(f"{path}: missing ({sql_path.name} and {yml_path.name} go together)")
    data, document = read_yaml(yml_path)
    sql = sql_path.read_text()
    if not sql.lstrip().startswith("--"):
        raise CatalogError(f"{sql_path}: must start with a comment saying why the query exists")
    try:
        used = sql_parameters(sql)
    except ValueError as exc:
        raise CatalogError(f"{sql_path}: {exc}") from None
    try:
        return query_spec.build(data, kind=kind, sql=sql, sql_names=used, sql_path=sql_path, yml_path=yml_path)
    except SpecError as exc:
        raise CatalogError(f"{yml_path}:{line_of(document, exc.path)}: {exc}") from None


def realert_intervals(queries: Iterable[Query], default: dt.timedelta) -> dict[str, dt.timedelta]:
    """Per-detection re-alert intervals for the outbox: each detection's `realert`, `*` for the rest."""
    intervals = {query.id: query.realert for query in queries if query.realert is not None}
    return {"*": default, **intervals}


# --- YAML ------------------------------------------------------------------------------------------------------


class Replace(dict[str, Any]):
    """A `with:` mapping tagged `!replace`: it replaces the base record's mapping instead of merging into it."""


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when the wheel has it: ~5x faster
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one) and knows `!replace`."""


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


def _replace(loader: _StrictLoader, node: yaml.MappingNode) -> Replace:
    return Replace(_no_duplicates(loader, node, deep=True))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
_StrictLoader.add_constructor("!replace", _replace)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The document of a YAML file and its node tree (which knows the line of every key)."""
    loader = _StrictLoader(path.read_text())  # a SafeLoader subclass
    try:
        document = loader.get_single_node()
        return (loader.construct_document(document) if document is not None else None), document
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def line_of(document: yaml.Node | None, path: KeyPath) -> int:
    """The 1-based line of the key `path` leads to, or of the deepest part of it the document has.

    Runs on a constructed document, whose `<<: *anchor` merges PyYAML has flattened in place: a merged key
    points at the line of the anchor that wrote it.
    """
    node, line = document, document.start_mark.line + 1 if document is not None else 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
