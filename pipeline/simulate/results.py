"""What a simulation reports: the injected incidents, the benign look-alikes, and the counts."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class InjectedIncident:
    """One injected incident and the detection expected to find it. `event_ids` are its signature events
    (side effects such as Secrets Manager's own Decrypt calls are not listed). For assumed-role sessions
    `principal_arn` is the session ARN and `session_issuer_arn` the role behind it (detections may report
    either); service events have no principal."""

    name: str
    detection_id: str
    principal_arn: str | None
    resource_arn: str | None
    account_id: str
    start: dt.datetime
    end: dt.datetime
    event_ids: list[str]
    region: str = ""
    session_issuer_arn: str | None = None

    def is_principal(self, arn: str | None) -> bool:
        return arn is not None and arn in (self.principal_arn, self.session_issuer_arn)


@dataclass(frozen=True)
class BenignActor:
    """A look-alike that is always in the baseline and must NOT trigger `quiet_for` (or anything else).
    No incident shares its principal, nor (for assumed roles) its role."""

    name: str
    principal_arn: str | None
    resource_arn: str | None
    account_id: str
    description: str
    quiet_for: tuple[str, ...]
    session_issuer_arn: str | None = None

    def is_principal(self, arn: str | None) -> bool:
        return arn is not None and arn in (self.principal_arn, self.session_issuer_arn)


@dataclass
class SimulationResult:
    out: str
    seed: int
    start: dt.date
    days: int
    org_id: str | None
    accounts: list[str]
    regions: list[str]
    events_per_day: int
    kms_only: bool
    files: int = 0
    digest_files: int = 0
    events: int = 0
    kms_events: int = 0
    secrets_events: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    incidents: list[InjectedIncident] = field(default_factory=list)
    benign: list[BenignActor] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def incident(self, name: str) -> InjectedIncident:
        for incident in self.incidents:
            if incident.name == name:
                return incident
        raise KeyError(f"incident {name!r} was not injected")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_second"] = round(self.events_per_second, 1)
        return data
