"""Query parameters: the typed values a query's `$name`s take, and finding those `$name`s in SQL text.

One coercion serves every way a value arrives: YAML defaults and case params, `keytrail ... --param`, and the
engine binding values; so `"7"`, `7` and `7.0`-as-an-int are judged the same everywhere.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.times import parse_duration, parse_timestamp

PARAM_TYPES: tuple[str, ...] = ("int", "float", "str", "bool", "duration", "timestamp", "list[str]")

# Names the engine binds itself; a query uses them without declaring them (see queries/README.md).
BUILTINS: frozenset[str] = frozenset(
    {"since", "until", "baseline_start", "lookback", "window", "trusted_accounts", "history_start"}
)

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
