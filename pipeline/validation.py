"""`msgspec.convert` for files people write: a failure names the key path and says in words what was expected.

msgspec reports "Expected `int` >= 1 - at `$.tests[0].events[0].repeat`"; `convert` raises a SpecError saying
`tests[0].events[0].repeat must be a positive integer`, with the path `("tests", 0, "events", 0, "repeat")` so the
caller can name the file and line. A constrained type carries its own message,
`Annotated[int, Meta(ge=1, extra={"error": "{where} must be a positive integer"})]` ({where}: the dotted path,
{value}: the offending value), and `Meta(description=...)` names what a wrong-typed value should have been.
"""

from __future__ import annotations

import ast
import re
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

KeyPath = tuple[str | int, ...]
T = TypeVar("T")

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "str": "text",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
}
_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `(?P<at>[^`]*)`(?: in `(?P<container>[^`]*)`)?)?$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


class SpecError(ValueError):
    """A document breaks a rule; `path` leads to the offending key (`("tests", 2, "with")`)."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path


def dotted(path: KeyPath) -> str:
    """`("tests", 2, "with")` -> `tests[2].with`."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def convert(data: Any, type_: type[T], path: KeyPath = ()) -> T:
    """`msgspec.convert(data, type_)`; a failure is a SpecError whose path starts with `path` (where `data` is)."""
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), data, type_, path) from None


def _translate(error: str, data: Any, type_: type, prefix: KeyPath) -> SpecError:
    match = _ERROR.match(error)
    assert match is not None  # the pattern matches any text
    message, container = match["message"], match["container"]
    relative = _parse_path(container or match["at"] or "$")
    path = (*prefix, *relative)
    where = dotted(path) or "top level"
    value = _value_at(data, relative)
    info = _info_at(type_, relative)
    if container is not None:  # a mapping key failed ("- at `key` in `$.params`"): find which one
        regex = re.fullmatch(r"Expected `str` matching regex (.*)", message)
        pattern = ast.literal_eval(regex[1]) if regex else None
        key = next(k for k in value if not isinstance(k, str) or (pattern and not re.search(pattern, k)))
        mapping = _container(info)
        key_type = mapping.key_type if isinstance(mapping, mi.DictType) else None
        template = _find(key_type, "error") or "{where}: key {value!r} must be text"
        return SpecError((*path, key), template.format(where=where, value=key))
    lead = f"{dotted(path)}: " if path else ""
    if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        struct = _container(info)
        allowed = ", ".join(sorted(f.encode_name for f in struct.fields)) if struct else ""
        return SpecError((*path, unknown[1]), f"{lead}unknown key {unknown[1]!r} (allowed: {allowed})")
    if missing := re.fullmatch(r"Object missing required field `(.*)`", message):
        return SpecError(path, f"{lead}missing required key {missing[1]!r}")
    if expected := re.fullmatch(r"Expected `(.*)`, got `(.*)`", message):
        wanted = _find(info, "description") or " or ".join(_TYPE_NAMES.get(t, t) for t in expected[1].split(" | "))
        return SpecError(path, f"{where} must be {wanted}, got {_TYPE_NAMES.get(expected[2], expected[2])}")
    if template := _find(info, "error"):  # a constraint failed (pattern, bound, length): the type says it in words
        return SpecError(path, template.format(where=where, value=value))
    return SpecError(path, f"{where}: {message}")


def _parse_path(text: str) -> KeyPath:
    """msgspec's `$.tests[0].events` -> `("tests", 0, "events")`."""
    return tuple(name if name else int(index) for name, index in _SEGMENT.findall(text.removeprefix("$")))


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _info_at(type_: type, path: KeyPath) -> Any:
    """The msgspec type info of what `path` leads to under `type_` (None below an `Any`)."""
    info: Any = mi.type_info(type_)
    for part in path:
        info = _container(info)
        if isinstance(info, mi.StructType):
            info = next((f.type for f in info.fields if f.encode_name == part), None)
        elif isinstance(info, mi.ListType | mi.DictType):
            info = info.item_type if isinstance(info, mi.ListType) else info.value_type
    return info


def _container(info: Any) -> Any:
    """The Struct, list or dict type inside `info` (unwrapping `Meta` and `| None` / `| UNSET`), if any."""
    if isinstance(info, mi.Metadata):
        return _container(info.type)
    if isinstance(info, mi.UnionType):
        return next((c for c in map(_container, info.types) if c is not None), None)
    return info if isinstance(info, mi.StructType | mi.ListType | mi.DictType) else None


def _find(info: Any, what: str) -> str | None:
    """A type's `Meta(description=...)` (what="description") or `Meta(extra={"error": ...})` (what="error")."""
    if isinstance(info, mi.Metadata):
        found = (info.extra_json_schema if what == "description" else info.extra) or {}
        return found.get(what) or _find(info.type, what)
    if isinstance(info, mi.UnionType):
        return next((found for found in (_find(t, what) for t in info.types) if found), None)
    return None
