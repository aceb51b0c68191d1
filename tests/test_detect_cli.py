"""`keytrail detect` over a small lake written with pipeline.lake, and `keytrail test`: contract-exact JSON,
deterministic alert ids across overlapping reruns, exit codes and error messages."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import cases, catalog, events
from pipeline.alerting.alert import ALERT_FIELDS, SEVERITIES, SEVERITY_RANK, Alert
from pipeline.catalog import EventSpec
from pipeline.cli import app
from pipeline.cli.detect_cmds import _findings_listing
from tests.test_conformance import EXPECTED_DETECTIONS as KMS_DETECTIONS
from tests.trails import commit_table

UTC = dt.UTC
KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OUTSIDER = {"type": "AWSAccount", "principalId": "AROAEXAMPLEOUTSIDER:x", "accountId": "444455556666"}
runner = CliRunner()


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A week of ordinary decrypts, then on 2024-05-08: a 20x spike at 14:05, a key deletion at 14:20 and
    an outside account decrypting at 14:40. Written through the real lake writer (committed batches)."""
    day = dt.timedelta
    specs = [
        EventSpec(
            base="kms_decrypt", at=dt.datetime(2024, 5, 1, 0, 2, tzinfo=UTC), repeat=288, every=day(minutes=5), days=8
        ),
        EventSpec(base="kms_decrypt", at=dt.datetime(2024, 5, 8, 14, 5, tzinfo=UTC), repeat=240, every=day(seconds=12)),
        EventSpec(base="kms_schedule_key_deletion", at=dt.datetime(2024, 5, 8, 14, 20, tzinfo=UTC)),
        EventSpec(
            base="kms_decrypt",
            at=dt.datetime(2024, 5, 8, 14, 40, tzinfo=UTC),
            repeat=3,
            overrides={"userIdentity": catalog.Replace(OUTSIDER)},
        ),
    ]
    records = cases.expand_events(specs, key="cli-lake", default_start=dt.datetime(2024, 5, 1, tzinfo=UTC))
    path = tmp_path_factory.mktemp("detect") / "lake"
    table = events.normalize_many(records, source_object="test")
    commit_table(path, table)
    return path


def _detect(lake_path: Path, *args: str) -> tuple[int, list[dict[str, object]], str]:
    result = runner.invoke(app, ["detect", "--lake", str(lake_path), "--format", "json", *args])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


def _parse_time(value: object) -> dt.datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_json_output_follows_the_alert_contract_exactly(small_lake: Path) -> None:
    code, alerts, stderr = _detect(small_lake, "--since", "2024-05-08T14:00:00Z", "--until", "2024-05-08T15:00:00Z")
    assert code == 0, stderr
    detections = {q.id: q for q in catalog.load("detections")}
    assert [a["detection_id"] for a in alerts] == [
        "kms_key_deletion_or_disable",  # critical first
        "kms_decrypt_volume_spike",  # then high, oldest first
        "kms_cross_account_use",
    ]
    for alert in alerts:
        assert list(alert) == list(ALERT_FIELDS)  # exactly the contract's fields, in order
        assert re.fullmatch(r"[0-9a-f]{32}", alert["alert_id"])  # type: ignore[arg-type]
        query = detections[alert["detection_id"]]  # type: ignore[index]
        assert alert["title"] == query.title and alert["runbook"] == query.runbook
        assert alert["attack"] == list(query.attack)
        assert alert["severity"] in SEVERITIES
        for name in ("account_id", "region", "principal_arn", "resource_arn"):
            assert alert[name] is None or isinstance(alert[name], str)
        first, last = _parse_time(alert["first_seen"]), _parse_time(alert["last_seen"])
        assert dt.datetime(2024, 5, 8, 14, tzinfo=UTC) <= first <= last < dt.datetime(2024, 5, 8, 15, tzinfo=UTC)
        assert isinstance(alert["event_count"], int) and not isinstance(alert["event_count"], bool)
        assert isinstance(alert["context"], dict)
        assert not {"first_seen", "last_seen", "event_count", "severity"} & set(alert["context"])  # type: ignore[arg-type]
    ranks = [SEVERITY_RANK[a["severity"]] for a in alerts]  # type: ignore[index]
    assert ranks == sorted(ranks, reverse=True)

    deletion, spike, cross = alerts
    assert deletion["severity"] == "critical" and deletion["resource_arn"] == KEY
    assert deletion["principal_arn"] == "arn:aws:iam::111122223333:user/alice"
    assert spike["severity"] == "high" and spike["event_count"] == 240 + 12  # the spike plus the usual 12
    assert spike["principal_arn"] == "arn:aws:iam::111122223333:role/billing-api"
    assert spike["first_seen"] == "2024-05-08T14:02:00Z" and spike["account_id"] == "111122223333"
    assert spike["context"]["baseline_typical"] == 12  # type: ignore[index]
    assert cross["context"]["caller_account"] == "444455556666" and cross["event_count"] == 3  # type: ignore[index]


def test_overlapping_rerun_gives_the_same_alert_ids(small_lake: Path) -> None:
    _, first, _ = _detect(small_lake, "--since", "2024-05-08T14:00:00Z", "--until", "2024-05-08T15:00:00Z")
    _, again, _ = _detect(small_lake, "--since", "2024-05-08T14:00:00Z", "--until", "2024-05-08T15:00:00Z")
    _, wider, _ = _detect(small_lake, "--since", "2024-05-08T13:30:00Z", "--until", "2024-05-08T16:30:00Z")
    assert first == again
    ids = {a["detection_id"]: a["alert_id"] for a in first}
    assert ids == {a["detection_id"]: a["alert_id"] for a in wider}


def test_param_overrides_and_detection_selection(small_lake: Path) -> None:
    window = ["--since", "2024-05-08T14:00:00Z", "--until", "2024-05-08T15:00:00Z"]
    code, alerts, _ = _detect(small_lake, *window, "-d", "kms_decrypt_volume_spike", "-d", "kms_cross_account_use")
    assert code == 0 and [a["detection_id"] for a in alerts] == ["kms_decrypt_volume_spike", "kms_cross_account_use"]
    code, alerts, _ = _detect(
        small_lake, *window, "-d", "kms_decrypt_volume_spike", "--param", "kms_decrypt_volume_spike.min_events=5000"
    )
    assert code == 0 and alerts == []
    # the outside account becomes trusted: only "first use in the lookback" is left, at medium severity
    code, alerts, _ = _detect(
        small_lake,
        *window,
        "-d",
        "kms_cross_account_use",
        "--trusted-account",
        "111122223333",
        "--trusted-account",
        "444455556666",
    )
    assert code == 0 and [a["severity"] for a in alerts] == ["medium"]


def test_no_findings_is_success(small_lake: Path) -> None:
    code, alerts, _ = _detect(small_lake, "--since", "2024-05-03T10:00:00Z", "--until", "2024-05-03T11:00:00Z")
    assert code == 0 and alerts == []
    result = runner.invoke(
        app, ["detect", "--lake", str(small_lake), "--since", "2030-01-01T00:00:00Z", "--until", "2030-01-01T01:00:00Z"]
    )
    assert result.exit_code == 0 and "no findings" in result.stdout


def test_table_output_lists_the_findings(small_lake: Path) -> None:
    result = runner.invoke(
        app, ["detect", "--lake", str(small_lake), "--since", "2024-05-08T14:00:00Z", "--until", "2024-05-08T15:00:00Z"]
    )
    assert result.exit_code == 0
    assert "kms_key_deletion_or_disable" in result.stdout and "critical" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--param", "kms_decrypt_volume_spike.min_event=3"], 1, "has no parameter"),
        (["--param", "kms_decrypt_volume_spike.min_events=lots"], 1, "expected an int"),
        (["--param", "min_events=3"], 2, "DETECTION_ID.param=value"),
        (["--detection", "no_such_detection"], 1, "unknown detection"),
        (["--since", "yesterday"], 2, "not a time: use an ISO time"),
        (["--since", "-2d", "--until", "-3d"], 2, "must be before"),
        (["--since", "2024-05-08T15:00:00Z", "--until", "2024-05-08T14:00:00Z"], 2, "must be before"),
        (["--format", "xml"], 2, "use table or json"),
    ],
)
def test_errors_exit_non_zero_with_a_clear_message(small_lake: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["detect", "--lake", str(small_lake), "--until", "2024-05-08T15:00:00Z", *args])
    assert result.exit_code == code
    assert message in " ".join((result.stdout + result.stderr).split())


def test_missing_lake_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["detect", "--lake", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "keytrail ingest" in result.stderr


def test_help_has_an_example() -> None:
    for command in ("detect", "test"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example: keytrail " + command in " ".join(result.stdout.split())


def test_keytrail_test_passes_fails_and_refuses_unknown_ids(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["test", "kms_key_deletion_or_disable"])
    assert ok.exit_code == 0 and "pass" in ok.stdout and "FAIL" not in ok.stdout
    unknown = runner.invoke(app, ["test", "no_such_query"])
    assert unknown.exit_code == 2
    from tests.test_catalog import YML, write_pair

    write_pair(tmp_path, yml=YML.replace("expect: [{event_count: 3}]", "expect: [{event_count: 4}]"))
    (tmp_path / "investigations").mkdir()
    failing = runner.invoke(app, ["test", "--queries", str(tmp_path)])
    assert failing.exit_code == 1
    assert "no output row matches {event_count: 4}" in failing.stdout and "1 of 2 case(s) failed" in failing.stdout


LIFECYCLE = {"ScheduleKeyDeletion", "DisableKey", "DisableKeyRotation", "DeleteImportedKeyMaterial"}


def _corpus_lifecycle_calls(corpus: Path) -> set[tuple[str, str, str]]:
    """(principal, key ARN, eventName) of every successful key-lifecycle call, read straight from the files."""
    import gzip

    found = set()
    for path in corpus.rglob("*.json.gz"):
        for record in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
            kms = record.get("eventSource") == "kms.amazonaws.com"
            if kms and record["eventName"] in LIFECYCLE and not record.get("errorCode"):
                key = next(r["ARN"] for r in record["resources"] if ":key/" in r["ARN"])
                found.add((record["userIdentity"]["arn"], key, record["eventName"]))
    return found


def test_kms_detections_on_the_real_corpus(realdata: Path, tmp_path: Path) -> None:
    """Real public CloudTrail: every key deletion/disable in it is found; the Stratus SSM-parameter retrieval
    (bert-jan, 11:58, decrypted through KMS with per-parameter contexts) is context scanning, while the
    secret retrieval a minute earlier is left to secrets_enumeration (its KMS echo is invoked by Secrets
    Manager); and nothing else in the corpus (real background traffic included) trips a KMS detection."""
    corpus = realdata / "corpus"
    lake_path = tmp_path / "lake"
    ingest = runner.invoke(app, ["ingest", str(corpus), "--lake", str(lake_path)])
    assert ingest.exit_code == 0, ingest.stdout
    selection = [arg for detection in sorted(KMS_DETECTIONS) for arg in ("-d", detection)]
    code, alerts, stderr = _detect(
        lake_path, "--since", "2014-01-01T00:00:00Z", "--until", "2025-01-01T00:00:00Z", *selection
    )
    assert code == 0, stderr
    by_detection: dict[str, list[dict[str, object]]] = {}
    for alert in alerts:
        by_detection.setdefault(alert["detection_id"], []).append(alert)  # type: ignore[arg-type]
    assert set(by_detection) == {"kms_key_deletion_or_disable", "kms_context_scanning"}
    lifecycle = {
        (a["principal_arn"], a["resource_arn"], a["context"]["event_name"])  # type: ignore[index]
        for a in by_detection["kms_key_deletion_or_disable"]
    }
    assert lifecycle == _corpus_lifecycle_calls(corpus) and len(lifecycle) == 7
    scanning = {(a["principal_arn"], a["context"]["context_key"]) for a in by_detection["kms_context_scanning"]}  # type: ignore[index]
    assert scanning == {("arn:aws:iam::123837392027:user/bert-jan", "PARAMETER_ARN")}
    firsts = sorted(str(a["first_seen"]) for a in by_detection["kms_context_scanning"])
    assert firsts[0].startswith("2023-07-10T11:58")  # the labelled ssm-retrieve-securestring-parameters window


def test_table_names_the_scope_of_a_finding_without_caller_or_resource() -> None:
    """trail_silence names no caller and no resource: the table says what went silent, not '- -> -'."""
    start = dt.datetime(2024, 5, 8, 14, tzinfo=dt.UTC)
    common = {
        "detection_id": "trail_silence",
        "title": "silence",
        "severity": "high",
        "principal_arn": None,
        "resource_arn": None,
        "first_seen": start,
        "last_seen": start,
        "event_count": 0,
    }
    whole = Alert(alert_id="a1", account_id=None, region=None, context={"scope": "whole_trail"}, **common)
    one = Alert(alert_id="a2", account_id="111122223333", region="eu-west-1", context={"scope": "account"}, **common)
    listing = _findings_listing([whole, one], start, start + dt.timedelta(hours=1))
    subjects = [row[2] for row in listing.rows]
    assert subjects == ["whole trail", "account 111122223333 in eu-west-1"]
