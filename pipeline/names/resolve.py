"""What was it called at that time? (pure) Names for an alert's account and resource as of its `first_seen`,
and the one way they are printed beside an id: `alias/payments-prod (key/1234abcd…)`.

A trail row holds from its call until the next call naming it (an alias created, moved, deleted). A row from
AWS or a CSV is a snapshot with no history: it is used only where the trail says nothing for that time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from pipeline.alerting.alert import Alert
from pipeline.callers import display_name
from pipeline.names.table import NameRow

ID_CHARS = 8  # of a key id beside its alias: `key/1234abcd…`


class NameIndex:
    """Rows by (kind, id); a key is also found by its bare key id (the part after `:key/`)."""

    def __init__(self, rows: Iterable[NameRow]) -> None:
        self._rows: dict[tuple[str, str], list[NameRow]] = defaultdict(list)
        for row in rows:
            self._rows[(row.kind, row.id)].append(row)
            if row.kind == "key" and ":key/" in row.id:
                self._rows[("key", row.id.split(":key/", 1)[1])].append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def names(self, kind: str, id_: str | None, at: dt.datetime) -> list[str]:
        """The names `id_` had at `at`: from the trail when it covers that time, else from snapshots."""
        if not id_:
            return []
        rows = self._rows.get((kind, id_), [])
        if kind == "key" and not rows and ":key/" in id_:
            rows = self._rows.get(("key", id_.split(":key/", 1)[1]), [])
        held = [row for row in rows if _holds(row, at)]
        trail = sorted({row.name for row in held if row.source == "trail"})
        return trail or sorted({row.name for row in held if row.source != "trail"})


def _holds(row: NameRow, at: dt.datetime) -> bool:
    return (row.valid_from is None or row.valid_from <= at) and (row.valid_until is None or at < row.valid_until)


def alert_names(alert: Alert, index: NameIndex) -> dict[str, str]:
    """`{"account": ..., "resource": ...}` for the names known at the alert's first_seen (several aliases of
    one key: joined by ", ")."""
    at = alert.first_seen
    found: dict[str, str] = {}
    if account := index.names("account", alert.account_id, at):
        found["account"] = ", ".join(account)
    resource = alert.resource_arn or ""
    kind = "key" if ":kms:" in resource else "secret" if ":secretsmanager:" in resource else None
    if kind and (names := index.names(kind, resource, at)):
        found["resource"] = ", ".join(names)
    principal_account = _account_of(alert.principal_arn)
    other = principal_account if principal_account != alert.account_id else None
    if other and (names := index.names("account", other, at)):
        found["principal_account"] = ", ".join(names)
    return found


def _account_of(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" and parts[4] else None


def enrich(alerts: Iterable[Alert], index: NameIndex) -> list[Alert]:
    """`alerts` with their `names` (ids, and so alert ids, unchanged)."""
    return [dataclasses.replace(alert, names=alert_names(alert, index)) for alert in alerts]


def labelled(name: str | None, id_: str | None) -> str:
    """`name (short id)`, or the short id alone: `alias/payments-prod (key/1234abcd…)`, `payments-prod
    (210987654321)`. A key id is cut to ID_CHARS; other ids are shown whole."""
    short = display_name(id_) or ""
    key_id = (id_ or "").split(":key/", 1)[1] if ":key/" in (id_ or "") else ""
    if len(key_id) > ID_CHARS:
        short = f"key/{key_id[:ID_CHARS]}…"
    if not name:
        return short
    return f"{name} ({short})" if short and short != name else name


def resource_label(alert: Alert) -> str:
    return labelled(alert.names.get("resource"), alert.resource_arn)


def account_label(alert: Alert) -> str:
    return labelled(alert.names.get("account"), alert.account_id)
