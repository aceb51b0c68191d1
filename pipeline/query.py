"""What a loaded query is: frozen, fully typed objects built from a validated SQL + YAML pair.

`query_spec` builds them from a YAML file, `catalog` finds the files; everything else (engine, detect, cases,
the CLI) reads only these objects.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.params import coerce


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
    integrity: tuple[Mapping[str, Any], ...] = ()  # rows of the `integrity` table (keytrail verify's results)

    @property
    def firing(self) -> bool:
        return bool(self.expect)


_READS_HOURLY = re.compile(r"\b(FROM|JOIN)\s+hourly\b", re.IGNORECASE)


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

    @property
    def reads_rollups(self) -> bool:
        """The SQL reads its lookback from the hourly rollups (`FROM hourly`)."""
        return _READS_HOURLY.search(self.sql) is not None

    def check_window(self, window: dt.timedelta) -> None:
        """ValueError unless `window` suits this query: above zero, and whole hours when it reads hourly rollups
        (a 10-minute bucket cannot be compared with hourly history)."""
        if window <= dt.timedelta(0):
            raise ValueError(f"{self.id}.window: must be longer than 0s, not {window}")
        if self.reads_rollups and window % dt.timedelta(hours=1):
            raise ValueError(
                f"{self.id}.window: must be a whole number of hours (its lookback comes from the hourly rollups), "
                f"not {window}"
            )

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
