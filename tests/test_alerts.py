"""Alert rendering for SNS (pure): short names, Subject, attributes, size trimming, OCSF, the storm summary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from pipeline.alerting.alert import ALERT_FIELDS, SEVERITIES, Alert, make_alert_id, make_dedup_key
from pipeline.alerting.messages import (
    MAX_SUBJECT_CHARS,
    SUMMARY_DETECTION_ID,
    TRIM_NOTE_KEY,
    attributes_size,
    message_attributes,
    ocsf_finding,
    render_body,
    short_name,
    storm_summary,
    subject,
)
from pipeline.times import bucket_start

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
ROLE_SESSION = "arn:aws:sts::111122223333:assumed-role/etl-worker/i-0abc123"
KEY_ALIAS = "arn:aws:kms:us-east-1:111122223333:alias/etl-key"
KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def make_alert(**overrides: Any) -> Alert:
    detection_id = overrides.pop("detection_id", "kms_decrypt_volume_spike")
    principal = overrides.pop("principal_arn", ROLE_SESSION)
    first_seen = overrides.pop("first_seen", T0)
    values: dict[str, Any] = {
        "alert_id": make_alert_id(detection_id, [principal], bucket_start(first_seen, dt.timedelta(hours=1))),
        "detection_id": detection_id,
        "title": "KMS decrypt volume spike",
        "severity": "high",
        "account_id": "111122223333",
        "region": "us-east-1",
        "principal_arn": principal,
        "resource_arn": KEY_ALIAS,
        "first_seen": first_seen,
        "last_seen": first_seen + dt.timedelta(minutes=55),
        "event_count": 4200,
        "attack": ("T1552", "TA0006"),
        "context": {"baseline_per_hour": 180, "ratio": 23.3},
        "runbook": "Check whether etl-worker's job changed; if not, revoke its session.",
    }
    values.update(overrides)
    return Alert(**values)


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        (ROLE_SESSION, "etl-worker"),
        ("arn:aws:iam::111122223333:role/service-role/etl-worker", "etl-worker"),
        ("arn:aws:iam::111122223333:user/alice", "alice"),
        ("arn:aws:iam::111122223333:root", "root@111122223333"),
        (KEY_ALIAS, "etl-key"),
        (KEY, "key/1234abcd"),
        ("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbC123", "prod/db-password"),
        ("kms.amazonaws.com", "kms.amazonaws.com"),
        (None, None),
    ],
)
def test_short_name(arn: str | None, expected: str | None) -> None:
    assert short_name(arn) == expected


def test_subject_names_principal_and_resource() -> None:
    assert subject(make_alert()) == "[HIGH] KMS decrypt volume spike: etl-worker on etl-key"
    assert (
        subject(make_alert(principal_arn=None, resource_arn=None, severity="low")) == "[LOW] KMS decrypt volume spike"
    )


def test_subject_is_truncated_with_an_ellipsis_and_has_no_line_breaks() -> None:
    long = make_alert(
        title="Secrets read far above baseline\nacross many distinct secrets in one short window " * 3,
        principal_arn="arn:aws:iam::111122223333:role/" + "a-very-long-role-name-" * 5,
    )
    text = subject(long)
    assert len(text) == MAX_SUBJECT_CHARS
    assert text.endswith("...") and text.isascii()  # a Subject is printable ASCII: no "…"
    assert "\n" not in text and text.startswith("[HIGH] Secrets read far above baseline across")


def test_message_attributes_are_strings_for_filter_policies() -> None:
    alert = make_alert()
    attributes = message_attributes(alert)
    assert attributes == {
        "severity": {"DataType": "String", "StringValue": "high"},
        "detection_id": {"DataType": "String", "StringValue": "kms_decrypt_volume_spike"},
        "account_id": {"DataType": "String", "StringValue": "111122223333"},
        "alert_id": {"DataType": "String", "StringValue": alert.alert_id},
    }
    # name + type + value, as SNS counts them toward the 256 KB limit
    assert attributes_size(attributes) == sum(len(k) + 6 + len(v["StringValue"]) for k, v in attributes.items())
    assert "account_id" not in message_attributes(make_alert(account_id=None))  # SNS rejects empty values


def test_json_body_is_the_alert_contract_without_dedup_key() -> None:
    alert = make_alert(dedup_key=make_dedup_key("kms_decrypt_volume_spike", [ROLE_SESSION]))
    body = json.loads(render_body(alert, created=T0))
    assert body == alert.to_dict()
    assert tuple(body) == ALERT_FIELDS and "dedup_key" not in body
    assert body["first_seen"] == "2024-05-01T10:00:00Z"
    assert Alert.from_dict(body) == alert


def test_dedup_key_ignores_the_bucket_but_alert_id_does_not() -> None:
    early, late = make_alert(), make_alert(first_seen=T0 + dt.timedelta(hours=3))
    assert early.alert_id != late.alert_id
    assert early.effective_dedup_key() == late.effective_dedup_key()
    assert make_alert(principal_arn="arn:aws:iam::111122223333:user/bob").effective_dedup_key() != (
        early.effective_dedup_key()
    )
    assert make_dedup_key("a", ["x"]) != make_dedup_key("b", ["x"])
    assert make_alert(dedup_key="explicit").effective_dedup_key() == "explicit"


def _evidence(count: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"6f6c1a39-0000-4000-8000-{i:012d}", "event_name": "Decrypt", "source_ip": f"10.0.{i % 250}.7"}
        for i in range(count)
    ]


def test_oversized_alert_cuts_the_biggest_evidence_list_and_says_how_many() -> None:
    alert = make_alert(context={"sample_events": _evidence(5000), "source_ips": ["10.0.0.7", "10.0.1.7"], "ratio": 20})
    budget = 100_000
    body = render_body(alert, created=T0, budget=budget)
    assert len(body.encode()) <= budget
    data = json.loads(body)
    for name in ALERT_FIELDS:
        if name != "context":
            assert data[name] == alert.to_dict()[name]
    kept = data["context"]["sample_events"]
    note = data["context"][TRIM_NOTE_KEY]
    assert 0 < len(kept) < 5000 and kept == alert.to_dict()["context"]["sample_events"][: len(kept)]
    assert note["items_cut"] == {"sample_events": 5000 - len(kept)} and note["total_items_cut"] == 5000 - len(kept)
    assert data["context"]["source_ips"] == ["10.0.0.7", "10.0.1.7"] and data["context"]["ratio"] == 20
    # as many items as fit: one more would not
    one_more = dict(data["context"], sample_events=alert.to_dict()["context"]["sample_events"][: len(kept) + 1])
    one_more[TRIM_NOTE_KEY] = dict(note, items_cut={"sample_events": 4999 - len(kept)})
    assert len(json.dumps(dict(data, context=one_more), separators=(",", ":")).encode()) > budget


def test_nested_lists_are_trimmed_and_small_alerts_untouched() -> None:
    alert = make_alert(context={"evidence": {"events": _evidence(3000), "keys": [KEY]}})
    data = json.loads(render_body(alert, created=T0, budget=50_000))
    assert data["context"]["evidence"]["keys"] == [KEY]
    assert data["context"][TRIM_NOTE_KEY]["items_cut"]["evidence.events"] > 0
    small = make_alert()
    assert json.loads(render_body(small, created=T0)) == small.to_dict()


def test_context_without_lists_is_dropped_but_the_alert_kept() -> None:
    alert = make_alert(context={"policy": "x" * 200_000, "principal": "etl"})
    data = json.loads(render_body(alert, created=T0, budget=20_000))
    assert data["alert_id"] == alert.alert_id and data["title"] == alert.title
    assert data["context"] == {
        TRIM_NOTE_KEY: {
            "reason": data["context"][TRIM_NOTE_KEY]["reason"],
            "items_cut": {},
            "total_items_cut": 0,
            "context_dropped": ["policy", "principal"],
        }
    }


@pytest.mark.parametrize(("severity", "severity_id"), list(zip(SEVERITIES, range(1, 6), strict=True)))
def test_ocsf_detection_finding(severity: str, severity_id: int) -> None:
    alert = make_alert(severity=severity, resource_arn=KEY)
    created = T0 + dt.timedelta(hours=1, minutes=2)
    finding = json.loads(render_body(alert, "ocsf", created=created))
    assert finding == ocsf_finding(alert, created=created)
    assert (finding["class_uid"], finding["category_uid"], finding["activity_id"], finding["type_uid"]) == (
        2004,
        2,
        1,
        200401,
    )
    assert finding["severity_id"] == severity_id
    assert finding["time"] == int(created.timestamp() * 1000)
    info = finding["finding_info"]
    assert info["uid"] == alert.alert_id and info["title"] == alert.title
    assert info["first_seen_time"] == int(T0.timestamp() * 1000)
    assert info["last_seen_time"] == int(alert.last_seen.timestamp() * 1000)
    assert info["types"] == ["kms_decrypt_volume_spike"]
    assert info["attacks"] == [{"technique": {"uid": "T1552"}}, {"tactic": {"uid": "TA0006"}}]
    assert finding["resources"] == [
        {"uid": KEY, "name": "key/1234abcd", "type": "AWS::KMS::Key", "region": "us-east-1"}
    ]
    assert finding["cloud"] == {"provider": "AWS", "region": "us-east-1", "account": {"uid": "111122223333"}}
    assert finding["actor"] == {"user": {"uid": ROLE_SESSION, "name": "etl-worker"}}
    assert finding["metadata"]["product"]["name"] == "keytrail" and finding["metadata"]["version"].startswith("1.")
    assert finding["count"] == 4200 and finding["remediation"]["desc"] == alert.runbook


def test_ocsf_body_is_trimmed_too() -> None:
    alert = make_alert(context={"sample_events": _evidence(4000)})
    body = render_body(alert, "ocsf", created=T0, budget=60_000)
    assert len(body.encode()) <= 60_000
    assert json.loads(body)["unmapped"]["context"][TRIM_NOTE_KEY]["total_items_cut"] > 0


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json, ocsf"):
        render_body(make_alert(), "xml", created=T0)


def test_storm_summary_stands_for_the_held_alerts() -> None:
    held = [
        make_alert(principal_arn=f"arn:aws:iam::111122223333:user/u{i}", severity=severity)
        for i, severity in enumerate(["low", "critical", "medium"])
    ]
    summary = storm_summary(held, storm_cap=50)
    assert summary.detection_id == SUMMARY_DETECTION_ID and summary.severity == "critical"
    assert summary.title == "3 more alerts held back by the storm cap (50 per run)"
    assert summary.event_count == 3 * 4200 and summary.account_id == "111122223333"
    assert [item["alert_id"] for item in summary.context["alerts"]] == [a.alert_id for a in held]
    assert summary.context["by_severity"] == {"low": 1, "critical": 1, "medium": 1}
    assert storm_summary(list(reversed(held)), storm_cap=50).alert_id == summary.alert_id  # order-independent
    assert storm_summary(held[:2], storm_cap=50).alert_id != summary.alert_id
    other_account = dataclasses.replace(held[0], alert_id="f" * 32, account_id="444455556666")
    assert storm_summary([*held, other_account], storm_cap=50).account_id is None
    assert subject(summary) == "[CRITICAL] 3 more alerts held back by the storm cap (50 per run)"


def test_short_name_of_an_identity_center_session_is_the_person() -> None:
    sso = (
        "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/mallory@example.com"
    )
    assert short_name(sso) == "mallory@example.com"
    assert short_name(ROLE_SESSION) == "etl-worker"  # a workload role: the role, not the per-call session
