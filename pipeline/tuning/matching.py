"""Does an exception cover a finding? Pure functions over an Alert's fields: glob patterns (`*`, `?`, `[...]`,
case-sensitive like ARNs) or exact text; source IPs by address, CIDR or glob."""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping

from pipeline.alerting.alert import Alert
from pipeline.tuning.model import Match, Tuning, TuningException
from pipeline.tuning.spec import is_glob

# Context columns detections use to list the source IPs of a finding's events.
_IP_COLUMNS = ("source_ip", "source_ips")


def text_matches(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    return fnmatch.fnmatchcase(value, pattern) if is_glob(pattern) else value == pattern


def ip_matches(pattern: str, value: str) -> bool:
    if is_glob(pattern):
        return fnmatch.fnmatchcase(value, pattern)
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(pattern, strict=False)
    except ValueError:  # a service name such as "kms.amazonaws.com" in sourceIPAddress
        return False


def source_ips(alert: Alert) -> tuple[str, ...]:
    """The source IPs a finding's context lists (empty when the detection lists none)."""
    found: list[str] = []
    for column in _IP_COLUMNS:
        value = alert.context.get(column)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Iterable) and not isinstance(value, Mapping):
            found.extend(str(v) for v in value if v is not None)
    return tuple(found)


def principal_forms(arn: str | None) -> tuple[str, ...]:
    """The ARNs a principal is known by: itself, and for an assumed-role session its role's ARN
    (`arn:aws:sts::1:assumed-role/nightly/i-0abc` -> `arn:aws:iam::1:role/nightly`), so one exception written
    against the role covers detections that name the caller by session and those that name it by role."""
    if not arn:
        return ()
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        return arn, f"arn:{parts[1]}:iam::{parts[4]}:role/{role}"
    return (arn,)


def match_covers(match: Match, alert: Alert) -> bool:
    """Every field the match names matches the finding (one of its patterns does). A source_ip match needs
    every source IP the finding lists to be covered, and a finding that lists none is not covered."""
    values = {
        "principal": principal_forms(alert.principal_arn),
        "resource": (alert.resource_arn,),
        "account": (alert.account_id,),
        "region": (alert.region,),
    }
    for name, patterns in match.fields().items():
        if name == "source_ip":
            ips = source_ips(alert)
            if not ips or not all(any(ip_matches(p, ip) for p in patterns) for ip in ips):
                return False
        elif not any(text_matches(p, value) for p in patterns for value in values[name]):
            return False
    return True


def applies_to(exception: TuningException, detection_id: str, tags: frozenset[str]) -> bool:
    """Whether a global exception's scope (`detections:` or `tags:`, or none: all) includes the detection."""
    if exception.detections:
        return detection_id in exception.detections
    if exception.tags:
        return bool(tags & set(exception.tags))
    return True


def matching_exception(
    alert: Alert, tuning: Tuning, tags: frozenset[str], now: dt.datetime, *, include_expired: bool = False
) -> TuningException | None:
    """The first exception covering `alert`: its detection's own, then global ones, in file order. Expired ones
    (as of `now`) never match unless `include_expired` (what `tuning check` counts as "would have matched")."""
    scoped = tuning.detections.get(alert.detection_id)
    candidates = (*(scoped.exceptions if scoped else ()), *tuning.exceptions)
    for exception in candidates:
        if not include_expired and exception.expired(now):
            continue
        if exception in tuning.exceptions and not applies_to(exception, alert.detection_id, tags):
            continue
        if match_covers(exception.match, alert):
            return exception
    return None
