"""What a loaded tuning file is: frozen, validated objects (the file's shape is `spec`, reading it `loader`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Finding fields an exception can match, in the order `tuning show` prints them.
MATCH_FIELDS: tuple[str, ...] = ("principal", "resource", "account", "region", "source_ip")


@dataclass(frozen=True)
class Match:
    """Patterns per finding field (each a tuple: any one may match; every field given must match)."""

    principal: tuple[str, ...] = ()
    resource: tuple[str, ...] = ()
    account: tuple[str, ...] = ()
    region: tuple[str, ...] = ()
    source_ip: tuple[str, ...] = ()

    def fields(self) -> dict[str, tuple[str, ...]]:
        """The fields this match constrains (name -> patterns)."""
        return {name: getattr(self, name) for name in MATCH_FIELDS if getattr(self, name)}


@dataclass(frozen=True)
class TuningException:
    """One exception: which findings it covers, why, who owns it, until when, and where it is written."""

    ref: str  # `detections.<id>.exceptions[0]` or `exceptions[2]` (or the file's own `id:`)
    source: str  # `keytrail.yaml:14`: where a reader finds it
    match: Match
    reason: str
    owner: str
    expires: dt.date | None = None
    detections: tuple[str, ...] = ()  # global exceptions: only these detections (empty: see `tags`)
    tags: tuple[str, ...] = ()  # global exceptions: only detections with one of these tags (empty: all)

    def expired(self, now: dt.datetime) -> bool:
        """Past its `expires` day: an exception matches through the end of that day (UTC)."""
        return self.expires is not None and now.date() > self.expires

    def to_dict(self) -> dict[str, Any]:
        """The `exception` object an excepted finding carries (alert JSON, outbox, `detect --format json`)."""
        return {
            "id": self.ref,
            "reason": self.reason,
            "owner": self.owner,
            "expires": self.expires.isoformat() if self.expires else None,
            "source": self.source,
            "match": {name: list(patterns) for name, patterns in self.match.fields().items()},
        }


@dataclass(frozen=True)
class DetectionTuning:
    """What the file says about one detection; None means: as shipped."""

    detection_id: str
    enabled: bool | None = None
    severity: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # coerced to the declared types
    realert: dt.timedelta | None = None
    exceptions: tuple[TuningException, ...] = ()


@dataclass(frozen=True)
class Tuning:
    """A loaded tuning file (or the empty tuning when there is none: `path` None)."""

    path: Path | None = None
    exceptions: tuple[TuningException, ...] = ()  # global ones
    detections: Mapping[str, DetectionTuning] = field(default_factory=dict)

    def all_exceptions(self) -> tuple[TuningException, ...]:
        """Every exception in the file: per-detection ones first (in detection order), then global ones."""
        scoped = tuple(e for d in self.detections.values() for e in d.exceptions)
        return scoped + self.exceptions

    def expired(self, now: dt.datetime) -> tuple[TuningException, ...]:
        return tuple(e for e in self.all_exceptions() if e.expired(now))


EMPTY = Tuning()
