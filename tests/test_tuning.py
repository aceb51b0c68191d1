"""The tuning file: strict validation (every invalid file names the file and line), and the pure matching of
findings against exceptions (globs, CIDRs, scopes, expiry)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import textwrap
from pathlib import Path

import pytest

from pipeline import catalog
from pipeline.settings import Settings
from pipeline.tuning import apply, loader
from pipeline.tuning.loader import TuningError
from pipeline.tuning.model import Tuning
from tests.test_alerts import make_alert

DETECTIONS = catalog.load("detections")
NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
NIGHTLY = "arn:aws:iam::111122223333:role/nightly-reencrypt"

VALID = """\
exceptions:                      # apply to every detection
  - match: {account: "210987654321"}
    reason: sandbox account, torn down nightly
    owner: platform-team
    expires: 2027-03-31
detections:
  kms_decrypt_volume_spike:
    params: {min_events: 500}
    severity: medium
    exceptions:
      - match: {principal: "arn:aws:iam::111122223333:role/nightly-*", region: us-east-1}
        reason: nightly re-encryption job, ticket SEC-1234
        owner: data-platform
        expires: 2027-01-31
  secrets_deletion: {enabled: false}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keytrail.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_issue_example_loads_with_typed_values(tmp_path: Path) -> None:
    tuning = loader.load(write(tmp_path, VALID), DETECTIONS)
    spike = tuning.detections["kms_decrypt_volume_spike"]
    assert spike.params == {"min_events": 500} and spike.severity == "medium"
    (nightly,) = spike.exceptions
    assert nightly.match.principal == ("arn:aws:iam::111122223333:role/nightly-*",)
    assert nightly.expires == dt.date(2027, 1, 31) and nightly.owner == "data-platform"
    assert nightly.source == "keytrail.yaml:11" and nightly.ref == "detections.kms_decrypt_volume_spike.exceptions[0]"
    assert tuning.exceptions[0].source == "keytrail.yaml:2" and tuning.exceptions[0].match.account == ("210987654321",)
    assert tuning.detections["secrets_deletion"].enabled is False
    tuned = {q.id: q for q in apply.tune_catalog(DETECTIONS, tuning)}
    assert not tuned["secrets_deletion"].enabled and tuned["kms_decrypt_volume_spike"].severity == "medium"
    # --param still overrides the file
    assert apply.param_overrides(
        tuning, ["kms_decrypt_volume_spike"], {"kms_decrypt_volume_spike": {"min_events": "9"}}
    )["kms_decrypt_volume_spike"] == {"min_events": "9"}
    assert apply.param_overrides(tuning, ["kms_decrypt_volume_spike"]) == {
        "kms_decrypt_volume_spike": {"min_events": 500}
    }


# (case, file text, line named, words the message must hold)
INVALID = [
    ("unknown top-level key", "exception:\n  - {}\n", 1, "unknown key 'exception'"),
    ("unknown detection", "detections:\n  kms_decrypt_spike: {enabled: false}\n", 2, "unknown detection"),
    ("unknown detection key", "detections:\n  secrets_deletion:\n    enable: false\n", 3, "unknown key 'enable'"),
    ("unknown param", "detections:\n  kms_decrypt_volume_spike:\n    params: {min_event: 5}\n", 3, "no parameter"),
    ("param of the wrong type", "detections:\n  kms_decrypt_volume_spike:\n    params:\n      min_events: lots\n",
     4, "expected an int"),
    ("bad severity", "detections:\n  secrets_deletion:\n    severity: urgent\n", 3, "one of info, low"),
    ("enabled not a bool", "detections:\n  secrets_deletion:\n    enabled: maybe\n", 3, "true or false"),
    ("bad realert", "detections:\n  secrets_deletion:\n    realert: soon\n", 3, "realert"),
    ("exception without owner",
     "exceptions:\n  - match: {account: '210987654321'}\n    reason: sandbox\n", 2, "missing required key 'owner'"),
    ("empty reason",
     "exceptions:\n  - match: {account: '210987654321'}\n    reason: ''\n    owner: me\n", 3, "must say why"),
    ("empty match", "exceptions:\n  - match: {}\n    reason: r\n    owner: o\n", 2, "match every finding"),
    ("unknown match field",
     "exceptions:\n  - match: {user: bob}\n    reason: r\n    owner: o\n", 2, "unknown key 'user'"),
    ("account as a bare number", "exceptions:\n  - match: {account: 210987654321}\n    reason: r\n    owner: o\n",
     2, "quote account ids"),
    ("account that can never match", "exceptions:\n  - match:\n      account: '21098765432'\n    reason: r\n"
     "    owner: o\n", 3, "an account id has 12"),
    ("region that can never match", "exceptions:\n  - match:\n      region: US East\n    reason: r\n    owner: o\n",
     3, "can never match an AWS region"),
    ("principal that is not an ARN", "exceptions:\n  - match:\n      principal: nightly-job\n    reason: r\n"
     "    owner: o\n", 3, "can never match"),
    ("principal ARN with a short account", "exceptions:\n  - match:\n      principal: 'arn:aws:iam::1111:role/x'\n"
     "    reason: r\n    owner: o\n", 3, "not 12 digits"),
    ("bad CIDR", "exceptions:\n  - match:\n      source_ip: 10.0.0.0/99\n    reason: r\n    owner: o\n",
     3, "not an IP address"),
    ("pattern matching everything", "exceptions:\n  - match:\n      principal: '*'\n    reason: r\n    owner: o\n",
     3, "matches everything"),
    ("bad expiry date", "exceptions:\n  - match: {region: us-east-1}\n    reason: r\n    owner: o\n"
     "    expires: next week\n", 5, "a date, YYYY-MM-DD"),
    ("unknown tag", "exceptions:\n  - match: {region: us-east-1}\n    reason: r\n    owner: o\n    tags: [s3]\n",
     5, "unknown tag"),
    ("scope on a detection's own exception", "detections:\n  secrets_deletion:\n    exceptions:\n"
     "      - match: {region: us-east-1}\n        reason: r\n        owner: o\n        tags: [kms]\n", 7,
     "only global exceptions"),
    ("duplicate key", "detections:\n  secrets_deletion: {enabled: false}\n  secrets_deletion: {enabled: true}\n",
     3, "duplicate key"),
    ("not YAML", "detections: [unclosed\n", 1, "invalid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_every_invalid_tuning_file_fails_naming_the_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TuningError) as caught:
        loader.load(path, DETECTIONS)
    message = str(caught.value)
    assert re.search(rf"{re.escape(str(path))}(:{line}\b|.*line {line}\b)", message), message
    assert words in message, message


def test_a_named_file_must_exist_and_keytrail_yaml_is_the_default(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="tuning file not found"):
        loader.locate(tmp_path / "missing.yaml", Settings())
    with pytest.raises(TuningError, match="KEYTRAIL_TUNING"):
        loader.locate(None, Settings(tuning=tmp_path / "missing.yaml"))
    assert loader.locate(None, Settings(), cwd=tmp_path) is None
    path = write(tmp_path, VALID)
    assert loader.locate(None, Settings(), cwd=tmp_path) == path
    assert Settings.from_env({"KEYTRAIL_TUNING": str(path)}).tuning == path


def _tuning(tmp_path: Path, text: str) -> Tuning:
    return loader.load(write(tmp_path, text), DETECTIONS)


def test_a_principal_glob_excepts_only_its_detection_and_matching_principals(tmp_path: Path) -> None:
    tuning = _tuning(tmp_path, VALID)
    nightly = make_alert(principal_arn=NIGHTLY, region="us-east-1")
    other_region = make_alert(principal_arn=NIGHTLY, region="eu-west-1")
    someone = make_alert(principal_arn="arn:aws:iam::111122223333:role/etl-worker")
    elsewhere = dataclasses.replace(nightly, detection_id="kms_key_deletion_or_disable")
    judged = apply.judge_findings([nightly, other_region, someone, elsewhere], tuning, DETECTIONS, NOW)
    assert [a.exception["id"] if a.exception else None for a in judged] == [
        "detections.kms_decrypt_volume_spike.exceptions[0]",
        None,
        None,
        None,
    ]
    assert judged[0].exception == {
        "id": "detections.kms_decrypt_volume_spike.exceptions[0]",
        "reason": "nightly re-encryption job, ticket SEC-1234",
        "owner": "data-platform",
        "expires": "2027-01-31",
        "source": "keytrail.yaml:11",
        "match": {"principal": ["arn:aws:iam::111122223333:role/nightly-*"], "region": ["us-east-1"]},
    }
    assert [a.severity for a in judged] == ["medium", "medium", "medium", nightly.severity]  # tuned severity
    assert [a.alert_id for a in judged] == [
        nightly.alert_id,
        other_region.alert_id,
        someone.alert_id,
        elsewhere.alert_id,
    ]


def test_an_expired_exception_stops_matching_the_day_after_it_expires(tmp_path: Path) -> None:
    tuning = _tuning(tmp_path, VALID)
    nightly = make_alert(principal_arn=NIGHTLY, region="us-east-1")
    last_day = dt.datetime(2027, 1, 31, 23, 59, tzinfo=dt.UTC)
    assert apply.judge_findings([nightly], tuning, DETECTIONS, last_day)[0].exception is not None
    assert apply.judge_findings([nightly], tuning, DETECTIONS, last_day + dt.timedelta(minutes=1))[0].exception is None
    notices = apply.expiry_notices(tuning, last_day + dt.timedelta(minutes=1))
    assert list(notices.values()) == [
        "tuning exception detections.kms_decrypt_volume_spike.exceptions[0] (keytrail.yaml:11, owner data-platform) "
        "expired on 2027-01-31: it no longer matches, its findings page again. Renew `expires` or remove it"
    ]


def test_global_exceptions_by_account_detections_and_tags(tmp_path: Path) -> None:
    tuning = _tuning(
        tmp_path,
        """\
        exceptions:
          - match: {account: "210987654321"}
            reason: sandbox
            owner: platform-team
          - match: {principal: "arn:aws:iam::111122223333:role/break-glass"}
            reason: break-glass role, reviewed weekly
            owner: security
            tags: [secrets]
          - match: {source_ip: 10.20.0.0/16}
            reason: partner VPN
            owner: partnerships
            detections: [kms_cross_account_use]
        """,
    )
    sandbox = make_alert(account_id="210987654321")
    glass = "arn:aws:iam::111122223333:role/break-glass"
    glass_on_kms = make_alert(principal_arn=glass)
    glass_on_secrets = make_alert(principal_arn=glass, detection_id="secrets_deletion")
    partner = make_alert(detection_id="kms_cross_account_use", context={"source_ips": ["10.20.3.4", "10.20.9.9"]})
    partner_and_other = make_alert(
        detection_id="kms_cross_account_use", context={"source_ips": ["10.20.3.4", "8.8.8.8"]}
    )
    partner_elsewhere = make_alert(context={"source_ips": ["10.20.3.4"]})
    judged = apply.judge_findings(
        [sandbox, glass_on_kms, glass_on_secrets, partner, partner_and_other, partner_elsewhere],
        tuning,
        DETECTIONS,
        NOW,
    )
    assert [a.exception["id"] if a.exception else None for a in judged] == [
        "exceptions[0]",
        None,
        "exceptions[1]",
        "exceptions[2]",
        None,  # one source IP outside the partner's range: not covered
        None,  # another detection
    ]


def test_every_example_in_the_tuning_guide_is_a_valid_file(tmp_path: Path) -> None:
    guide = (Path(__file__).resolve().parents[1] / "docs" / "tuning.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", guide, re.DOTALL)
    assert len(blocks) >= 5  # the shape, and the four week-one cases
    for n, block in enumerate(blocks):
        path = tmp_path / f"example{n}.yaml"
        path.write_text(block)
        tuning = loader.load(path, DETECTIONS)
        assert tuning.detections or tuning.exceptions, block


def test_realert_from_the_file_reaches_the_outbox_policy(tmp_path: Path) -> None:
    tuning = _tuning(tmp_path, "detections:\n  kms_decrypt_volume_spike:\n    realert: 90m\n")
    intervals = catalog.realert_intervals(apply.tune_catalog(DETECTIONS, tuning), dt.timedelta(hours=6))
    assert intervals["kms_decrypt_volume_spike"] == dt.timedelta(minutes=90)
    assert intervals["*"] == dt.timedelta(hours=6) and "secrets_deletion" not in intervals
