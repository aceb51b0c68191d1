"""An alert as an SNS message (pure): Subject, MessageAttributes, the JSON or OCSF body, and size trimming.

SNS limits (design.md §3): Subject <= 100 characters, message + attributes <= 256 KB. moto does not count
attributes, so the budget is enforced here. An alert too big for one message keeps every contract field: a
field over MAX_FIELD_CHARS (a 300 KB principal ARN) is cut to that, then evidence lists inside `context` are cut,
and `context._trimmed` says what went. Attribute values are at most MAX_ATTRIBUTE_CHARS whatever the alert holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import msgspec

from pipeline import __version__, safe_text
from pipeline.alerting.alert import SEVERITY_RANK, Alert, make_alert_id
from pipeline.callers import display_name
from pipeline.times import epoch_ms

MAX_MESSAGE_BYTES = 262_144
MAX_SUBJECT_CHARS = 100
MAX_FIELD_CHARS = 2_048  # an alert's text field, when the message is over budget (IAM allows ARNs of 2,048)
MAX_ATTRIBUTE_CHARS = 256  # a MessageAttribute value: ids and names, never evidence
FORMATS: tuple[str, ...] = ("json", "ocsf")
ELLIPSIS = "..."  # ASCII: a Subject is printable ASCII only
_NAME_CHARS = 32  # each short name in a Subject, so both fit beside a typical title

SUMMARY_DETECTION_ID = "keytrail_storm_summary"
OCSF_VERSION = "1.1.0"
# OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical.
OCSF_SEVERITY: dict[str, tuple[int, str]] = {
    "info": (1, "Informational"),
    "low": (2, "Low"),
    "medium": (3, "Medium"),
    "high": (4, "High"),
    "critical": (5, "Critical"),
}
_RESOURCE_TYPES = {"kms": "AWS::KMS::Key", "secretsmanager": "AWS::SecretsManager::Secret"}


# -- names and Subject ---------------------------------------------------------------------------------


def short_name(arn: str | None) -> str | None:
    """A readable name from an ARN (pipeline/callers.py: the one short form the CLI and Subjects print)."""
    return display_name(arn)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def subject(alert: Alert) -> str:
    """`[HIGH] KMS decrypt volume spike: etl-worker on alias/etl-key`, at most 100 printable ASCII characters.

    The resource is named by its alias (or secret name) from `alert.names` when known, else by its short id.

    SNS takes printable ASCII only in a Subject (no line breaks, no control characters): any run of whitespace
    (line breaks and separators such as U+0085 and U+2028 included) becomes one space, and every other
    character outside printable ASCII (ESC, NUL, a bidi override, an accent) a `?` (`safe_text.subject`).
    """
    principal = _one_line(short_name(alert.principal_arn))
    # The org's name for the resource (an alias, as of the finding's time) reads better than a key id.
    resource = _one_line(alert.names.get("resource") or short_name(alert.resource_arn))
    who = " on ".join(_clip(name, _NAME_CHARS) for name in (principal, resource) if name)
    text = f"[{alert.severity.upper()}] {_one_line(alert.title)}" + (f": {who}" if who else "")
    return _clip(text, MAX_SUBJECT_CHARS)


def _one_line(text: str | None) -> str:
    return safe_text.subject(" ".join(text.split())) if text else ""


# -- MessageAttributes ---------------------------------------------------------------------------------


def message_attributes(alert: Alert) -> dict[str, dict[str, str]]:
    """String attributes for SNS filter policies and subscriber-side dedup (an empty value is invalid: omitted).

    Values come partly from CloudTrail (the account id): bounded and free of control characters, so a hostile
    record cannot make the message undeliverable."""
    values = {
        "severity": alert.severity,
        "detection_id": alert.detection_id,
        "account_id": alert.account_id,
        "alert_id": alert.alert_id,
    }
    return {
        name: {"DataType": "String", "StringValue": _clip(_one_line(value), MAX_ATTRIBUTE_CHARS)}
        for name, value in values.items()
        if value
    }


def attributes_size(attributes: Mapping[str, Mapping[str, str]]) -> int:
    """Bytes SNS counts toward the 256 KB limit for attributes: name + data type + value."""
    return sum(
        len(name.encode()) + len(attr["DataType"].encode()) + len(attr["StringValue"].encode())
        for name, attr in attributes.items()
    )


# -- bodies --------------------------------------------------------------------------------------------


def _attack(technique_or_tactic: str) -> dict[str, Any]:
    kind = "tactic" if technique_or_tactic.upper().startswith("TA") else "technique"
    return {kind: {"uid": technique_or_tactic}}


def ocsf_finding(alert: Alert, *, created: dt.datetime) -> dict[str, Any]:
    """The alert as an OCSF 1.1 Detection Finding (class 2004), e.g. for Security Lake / Security Hub.

    `created` is when keytrail made the alert (its outbox time), so a re-send renders identically.
    """
    severity_id, severity_name = OCSF_SEVERITY[alert.severity]
    principal, resource = short_name(alert.principal_arn), short_name(alert.resource_arn)
    desc = f"{alert.title}: {alert.event_count} events" + (f" by {principal}" if principal else "")
    desc += f" on {resource}" if resource else ""
    finding: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 2004 * 100 + 1,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": 1,
        "status": "New",
        "time": epoch_ms(created),
        "start_time": epoch_ms(alert.first_seen),
        "end_time": epoch_ms(alert.last_seen),
        "count": alert.event_count,
        "message": alert.title,
        "finding_info": {
            "uid": alert.alert_id,
            "title": alert.title,
            "desc": desc,
            "created_time": epoch_ms(created),
            "first_seen_time": epoch_ms(alert.first_seen),
            "last_seen_time": epoch_ms(alert.last_seen),
            "types": [alert.detection_id],
            "analytic": {"uid": alert.detection_id, "name": alert.detection_id, "type_id": 1, "type": "Rule"},
            "attacks": [_attack(item) for item in alert.attack],
        },
        "resources": [],
        "cloud": {"provider": "AWS"},
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "keytrail", "vendor_name": "keytrail", "version": __version__},
        },
        "unmapped": {"context": alert.to_dict()["context"]},
    }
    if alert.region:
        finding["cloud"]["region"] = alert.region
    if alert.account_id:
        finding["cloud"]["account"] = {"uid": alert.account_id}
    if alert.resource_arn:
        service = alert.resource_arn.split(":")[2] if alert.resource_arn.count(":") >= 5 else ""
        finding["resources"].append(
            {
                "uid": alert.resource_arn,
                "name": resource,
                "type": _RESOURCE_TYPES.get(service, "Other"),
            }
            | ({"region": alert.region} if alert.region else {})
        )
    if alert.principal_arn:
        finding["actor"] = {"user": {"uid": alert.principal_arn, "name": principal}}
    if alert.runbook:
        finding["remediation"] = {"desc": alert.runbook}
    return finding


def _encode(document: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode(document, enc_hook=str)


def render_body(alert: Alert, fmt: str = "json", *, created: dt.datetime, budget: int = MAX_MESSAGE_BYTES) -> str:
    """The SNS Message: the alert JSON (design.md §3) or an OCSF finding, trimmed to `budget` UTF-8 bytes.

    Over budget: fields over MAX_FIELD_CHARS are cut first (`_trimmed.fields_cut`), then evidence lists, then the
    context (see `trim_context`). Only an alert whose bounded fields alone exceed the budget stays over it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"message format {fmt!r} is not one of {', '.join(FORMATS)}")
    document = alert.to_dict()  # once: trimming below re-encodes only with a different context
    render = _renderer(alert, document, fmt, created)
    context = document["context"]
    body = render(context)
    if len(body) > budget:
        alert, fields_cut = cut_fields(alert)
        note: dict[str, Any] = {}
        if fields_cut:
            render = _renderer(alert, alert.to_dict(), fmt, created)
            note = {"reason": _FIELDS_REASON, "fields_cut": fields_cut}
        body = render(trim_context(context, lambda candidate: len(render(candidate)) <= budget, **note))
    return body.decode()


def _renderer(alert: Alert, document: Mapping[str, Any], fmt: str, created: dt.datetime) -> Callable[[Context], bytes]:
    if fmt == "json":
        return functools.partial(_with_context, document)
    return functools.partial(_with_unmapped_context, ocsf_finding(alert, created=created))


def _with_context(document: Mapping[str, Any], context: Mapping[str, Any]) -> bytes:
    return _encode({**document, "context": context})


def _with_unmapped_context(finding: Mapping[str, Any], context: Mapping[str, Any]) -> bytes:
    return _encode({**finding, "unmapped": {**finding["unmapped"], "context": context}})


# -- trimming ------------------------------------------------------------------------------------------

TRIM_NOTE_KEY = "_trimmed"
_TRIM_REASON = "the alert was over SNS's 256 KB message limit: evidence lists were cut to fit"
_FIELDS_REASON = (
    f"the alert was over SNS's 256 KB message limit: fields over {MAX_FIELD_CHARS} characters were cut "
    "(fields_cut: characters cut), then evidence lists if needed"
)
_TEXT_FIELDS = ("title", "account_id", "region", "principal_arn", "resource_arn", "runbook")
Context = Mapping[str, Any]


def cut_fields(alert: Alert) -> tuple[Alert, dict[str, int]]:
    """`alert` with each text field over MAX_FIELD_CHARS cut to that (ending in "…"), and the characters cut per
    field. Ids and severity are keytrail's own and short; context is `trim_context`'s."""
    cut = {
        name: len(value) - MAX_FIELD_CHARS + 1
        for name in _TEXT_FIELDS
        if isinstance(value := getattr(alert, name), str) and len(value) > MAX_FIELD_CHARS
    }
    if not cut:
        return alert, {}
    shorter = {name: _clip(getattr(alert, name), MAX_FIELD_CHARS) for name in cut}
    return dataclasses.replace(alert, **shorter), cut


def _lists(value: Context, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[Any]]]:
    """Every list inside `value` reachable through mappings (the evidence lists a detection reports)."""
    for key, item in value.items():
        if key == TRIM_NOTE_KEY:
            continue
        if isinstance(item, list | tuple):
            yield (*path, str(key)), list(item)
        elif isinstance(item, Mapping):
            yield from _lists(item, (*path, str(key)))


def _replace_at(value: Context, path: tuple[str, ...], new: Any) -> dict[str, Any]:
    copy = dict(value)
    head, *rest = path
    copy[head] = _replace_at(copy[head], tuple(rest), new) if rest else new
    return copy


def _most_that_fit(count: int, fits: Callable[[int], bool]) -> int:
    """The largest `keep` in [0, count] with fits(keep); fits is monotone (fewer items never fit worse)."""
    low, high = 0, count
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _noted(context: Context, cut: Mapping[str, int], **extra: Any) -> dict[str, Any]:
    note = {"reason": _TRIM_REASON, "items_cut": dict(cut), "total_items_cut": sum(cut.values()), **extra}
    return {**context, TRIM_NOTE_KEY: note}


def _keeping(
    context: Context, cut: Mapping[str, int], path: tuple[str, ...], items: list[Any], keep: int
) -> tuple[dict[str, Any], dict[str, int]]:
    return _replace_at(context, path, items[:keep]), {**cut, ".".join(path): len(items) - keep}


def _fits_keeping(
    fits: Callable[[Context], bool],
    note: Mapping[str, Any],
    context: Context,
    cut: Mapping[str, int],
    path: tuple[str, ...],
    items: list[Any],
    keep: int,
) -> bool:
    return fits(_noted(*_keeping(context, cut, path, items, keep), **note))


def trim_context(context: Context, fits: Callable[[Context], bool], **note: Any) -> dict[str, Any]:
    """`context` with its evidence lists cut (largest first) until `fits` says the message fits.

    A binary search keeps as many items as fit; `_trimmed` records the items cut per list, plus `note` (what
    was cut before, e.g. `fields_cut`). If cutting every list is not enough, only the note is left: the rest of
    the alert is never dropped.
    """
    cut: dict[str, int] = {}
    trimmed: Context = context
    if note and fits(_noted(trimmed, cut, **note)):  # what was cut before was enough
        return _noted(trimmed, cut, **note)
    biggest_first = sorted(_lists(context), key=lambda pair: len(_encode({"v": pair[1]})), reverse=True)
    for path, items in biggest_first:
        keep = _most_that_fit(len(items), functools.partial(_fits_keeping, fits, note, trimmed, cut, path, items))
        trimmed, cut = _keeping(trimmed, cut, path, items, keep)
        if fits(_noted(trimmed, cut, **note)):
            return _noted(trimmed, cut, **note)
    return _noted({}, cut, context_dropped=sorted(map(str, context)), **note)


# -- the storm-cap summary -----------------------------------------------------------------------------


def storm_summary(held: Sequence[Alert], *, storm_cap: int) -> Alert:
    """One alert standing for the `held` alerts a run's storm cap kept from paging one by one.

    Its id is deterministic over the held ids, so a re-send after a crash deduplicates like any alert.
    """
    if not held:
        raise ValueError("a storm summary needs at least one held alert")
    first_seen = min(alert.first_seen for alert in held)
    accounts = {alert.account_id for alert in held}
    regions = {alert.region for alert in held}
    by_detection: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for alert in held:
        by_detection[alert.detection_id] = by_detection.get(alert.detection_id, 0) + 1
        by_severity[alert.severity] = by_severity.get(alert.severity, 0) + 1
    ids = sorted(alert.alert_id for alert in held)
    return Alert(
        alert_id=make_alert_id(SUMMARY_DETECTION_ID, ids, first_seen),
        detection_id=SUMMARY_DETECTION_ID,
        title=f"{len(held)} more alerts held back by the storm cap ({storm_cap} per run)",
        severity=max((alert.severity for alert in held), key=SEVERITY_RANK.__getitem__),
        account_id=accounts.pop() if len(accounts) == 1 else None,
        region=regions.pop() if len(regions) == 1 else None,
        principal_arn=None,
        resource_arn=None,
        first_seen=first_seen,
        last_seen=max(alert.last_seen for alert in held),
        event_count=sum(alert.event_count for alert in held),
        attack=tuple(sorted({item for alert in held for item in alert.attack})),
        context={
            "storm_cap": storm_cap,
            "alert_count": len(held),
            "by_detection": by_detection,
            "by_severity": by_severity,
            "alerts": [
                {
                    "alert_id": alert.alert_id,
                    "detection_id": alert.detection_id,
                    "severity": alert.severity,
                    "principal_arn": alert.principal_arn,
                    "resource_arn": alert.resource_arn,
                    "first_seen": alert.to_dict()["first_seen"],
                }
                for alert in held
            ],
        },
        runbook="More alerts than the storm cap allows fired in one run. They are recorded as sent-by-summary: "
        "`keytrail alerts list --state sent` lists them, `keytrail alerts show ID` shows one in full.",
    )
