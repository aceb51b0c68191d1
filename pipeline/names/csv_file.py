"""Names from a CSV a person keeps (`keytrail names load FILE`): columns `kind,id,name` and optionally
`valid_from,valid_until` (ISO times; empty: unbounded). Pure: text in, rows out, errors name the line."""

from __future__ import annotations

import csv
import io

from pipeline.names.table import KINDS, NameRow
from pipeline.times import parse_timestamp

REQUIRED = ("kind", "id", "name")
OPTIONAL = ("valid_from", "valid_until")


def parse(text: str, where: str = "names.csv") -> list[NameRow]:
    """Rows of a names CSV; raises ValueError naming `where`, the line and what to fix."""
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(reader.fieldnames or ())
    if missing := [c for c in REQUIRED if c not in header]:
        raise ValueError(f"{where}:1: missing column(s) {', '.join(missing)} (the header is kind,id,name)")
    if unknown := [c for c in header if c not in (*REQUIRED, *OPTIONAL)]:
        raise ValueError(
            f"{where}:1: unknown column(s) {', '.join(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})"
        )
    rows: list[NameRow] = []
    for line, record in enumerate(reader, start=2):
        kind, id_, name = ((record.get(c) or "").strip() for c in REQUIRED)
        if kind not in KINDS:
            raise ValueError(f"{where}:{line}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if not id_ or not name:
            raise ValueError(f"{where}:{line}: id and name must not be empty")
        if kind == "account" and not (id_.isdigit() and len(id_) == 12):
            raise ValueError(f"{where}:{line}: account id {id_!r} is not 12 digits")
        try:
            bounds = [parse_timestamp(v) if (v := (record.get(c) or "").strip()) else None for c in OPTIONAL]
        except ValueError as exc:
            raise ValueError(f"{where}:{line}: {exc}") from None
        rows.append(NameRow(kind, id_, name, "csv", *bounds))
    return rows
