"""Alert: the contract of a finding (design.md §3), its deterministic id, and its JSON form (pure).

`alert_id` = sha256 over detection id + dedup values + the window bucket the finding starts in, so re-running
detection over an overlapping range yields the same ids, and subscribers can deduplicate on it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from pipeline.times import iso, parse_timestamp

SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


def make_alert_id(detection_id: str, dedup_values: Sequence[Any], bucket: dt.datetime) -> str:
    """Deterministic id: same detection + dedup values + window bucket => same id."""
    material = msgspec.json.encode([detection_id, [_jsonable(v) for v in dedup_values], bucket.isoformat()])
    return hashlib.sha256(material).hexdigest()[:32]


def make_dedup_key(detection_id: str, dedup_values: Sequence[Any]) -> str:
    """Identity of "the same thing again" across buckets: detection id + dedup values, WITHOUT the bucket.

    The outbox suppresses a new alert whose dedup key paged within the re-alert interval.
    """
    material = msgspec.json.encode([detection_id, [_jsonable(v) for v in dedup_values]])
    return hashlib.sha256(material).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy / decimal-like scalars from query results
        return value.item()
    return value


@dataclass(frozen=True)
class Alert:
    """One finding, as printed by `keytrail detect --format json` and sent to SNS."""

    alert_id: str
    detection_id: str
    title: str
    severity: str
    account_id: str | None
    region: str | None
    principal_arn: str | None
    resource_arn: str | None
    first_seen: dt.datetime
    last_seen: dt.datetime
    event_count: int
    attack: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    runbook: str = ""
    # Org names beside ids, resolved as of the finding's time (`account`, `resource`, `principal_account`):
    # enrichment only, never part of the alert id (pipeline/names).
    names: Mapping[str, str] = field(default_factory=dict)
    # Set when a tuning exception covers the finding (reason, owner, expires, id, source): it is recorded as
    # `excepted` and does not page. Only in the JSON of excepted findings (pipeline/tuning).
    exception: Mapping[str, Any] | None = None
    # Not part of the JSON contract: set by detection (make_dedup_key) so the outbox can suppress repeats.
    dedup_key: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the contract's field names (times as ISO-8601 UTC with Z)."""
        data = asdict(self)
        del data["dedup_key"]
        if self.exception is None:
            del data["exception"]
        data["attack"] = list(self.attack)
        return {key: _jsonable(value) for key, value in data.items()}

    def to_json(self) -> str:
        return msgspec.json.encode(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Inverse of `to_dict` (for the outbox and `keytrail alerts show`)."""
        values = dict(data)
        for name in ("first_seen", "last_seen"):
            if isinstance(values[name], str):
                values[name] = parse_timestamp(values[name])
        values["attack"] = tuple(values.get("attack") or ())
        values["context"] = dict(values.get("context") or {})
        values["names"] = dict(values.get("names") or {})
        return cls(**values)

    def effective_dedup_key(self) -> str:
        """`dedup_key`, or for alerts made without one: detection + account + principal + resource."""
        if self.dedup_key:
            return self.dedup_key
        return make_dedup_key(self.detection_id, [self.account_id, self.principal_arn, self.resource_arn])


def alert_order(alert: Alert) -> tuple[int, dt.datetime, str, str]:
    """The order alerts are listed in: most severe first, then oldest; detection and id break ties."""
    return -SEVERITY_RANK[alert.severity], alert.first_seen, alert.detection_id, alert.alert_id


# The JSON contract's fields (design.md §3), in order; dedup_key is internal, `exception` only on excepted findings.
ALERT_FIELDS: tuple[str, ...] = tuple(n for n in Alert.__dataclass_fields__ if n not in ("dedup_key", "exception"))
