"""Tuning in a run, end to end over a real-shaped lake (tests/tuning_lake.py): exceptions recorded as
`excepted`, expiry said once, a global exception by account, and `enabled`/`severity` reaching SNS."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import catalog, findings
from pipeline.alerting.outbox import Outbox
from pipeline.alerting.publish import queue_and_publish
from pipeline.cli import app
from pipeline.settings import Settings
from pipeline.tuning import apply, loader
from tests import tuning_lake as tl
from tests.test_sns import Topic

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
runner = CliRunner()

TUNING = """\
exceptions:
  - match: {account: "210987654321"}
    reason: sandbox account, torn down nightly
    owner: platform-team
detections:
  kms_key_deletion_or_disable:
    exceptions:
      - match: {principal: "arn:aws:iam::111122223333:role/nightly-*"}
        reason: nightly key rotation, ticket SEC-1234
        owner: data-platform
        expires: EXPIRES
"""


@pytest.fixture(scope="module")
def tuning_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tl.build(tmp_path_factory.mktemp("tuning") / "lake")


def write_tuning(folder: Path, text: str, expires: str = "2099-12-31") -> Path:
    path = folder / "keytrail.yaml"
    path.write_text(textwrap.dedent(text).replace("EXPIRES", expires))
    return path


def run(lake: Path, tuning_path: Path, now: dt.datetime = NOW) -> tuple[list, tuple]:
    shipped = catalog.load("detections")
    tuning = loader.load(tuning_path, shipped)
    detections = findings.tuned_catalog(shipped, tuning)
    alerts = findings.find(
        lake, tl.SINCE, tl.UNTIL, detections=detections, tuning=tuning, now=now, detection_ids=tl.DETECTIONS
    )
    return alerts, (tuning, detections)


def test_a_principal_glob_excepts_exactly_its_findings_and_they_are_recorded(tuning_lake: Path, tmp_path: Path) -> None:
    alerts, (_, detections) = run(tuning_lake, write_tuning(tmp_path, TUNING))
    by_what = {(a.detection_id, a.principal_arn.rsplit(":", 1)[1]): a for a in alerts}
    assert len(alerts) == 6 and len(by_what) == 5  # alice twice
    nightly_key = by_what[("kms_key_deletion_or_disable", "assumed-role/nightly-rotate/rotate-2024-05-08")]
    nightly_secret = by_what[("secrets_deletion", "role/nightly-rotate")]
    sandbox = by_what[("kms_key_deletion_or_disable", "user/bob")]
    assert nightly_key.exception is not None and nightly_key.exception["owner"] == "data-platform"
    assert nightly_key.exception["id"] == "detections.kms_key_deletion_or_disable.exceptions[0]"
    assert nightly_secret.exception is None  # the same role in another detection still pages
    assert sandbox.exception is not None and sandbox.exception["id"] == "exceptions[0]"  # global, by account
    excepted_ids = {nightly_key.alert_id, sandbox.alert_id}
    assert {a.alert_id for a in findings.excepted(alerts)} == excepted_ids

    lake = tmp_path / "outbox-lake"
    report = queue_and_publish(lake, alerts, detections, now=NOW, settings=Settings(), publish=False)
    assert set(report.queued.excepted) == excepted_ids and len(report.queued.queued) == 4
    with Outbox.open(lake) as box:
        states = {e.alert.alert_id: e.state for e in box.entries()}
        assert box.counts()["excepted"] == 2 and box.counts()["pending"] == 4
        recorded = box.find(nightly_key.alert_id)
        history = box.history(nightly_key.alert_id)
    assert {i for i, s in states.items() if s == "excepted"} == excepted_ids
    assert recorded.alert.exception == nightly_key.exception  # the exception that matched, kept with the alert
    assert [h.event for h in history] == ["excepted"] and "SEC-1234" in (history[0].detail or "")


def test_an_expired_exception_no_longer_matches_and_the_next_run_says_so_once(
    tuning_lake: Path, tmp_path: Path
) -> None:
    alerts, (tuning, detections) = run(tuning_lake, write_tuning(tmp_path, TUNING, expires="2026-11-30"))
    nightly = [a for a in alerts if "nightly" in (a.principal_arn or "")]
    assert len(nightly) == 2 and all(a.exception is None for a in nightly)  # both page now
    assert len(findings.excepted(alerts)) == 1  # the sandbox exception has no expiry
    notices = apply.expiry_notices(tuning, NOW)
    lake = tmp_path / "outbox-lake"
    first = queue_and_publish(lake, alerts, detections, now=NOW, settings=Settings(), publish=False, notices=notices)
    again = queue_and_publish(lake, alerts, detections, now=NOW, settings=Settings(), publish=False, notices=notices)
    (said,) = first.notices
    assert "detections.kms_key_deletion_or_disable.exceptions[0] (keytrail.yaml:8, owner data-platform)" in said
    assert "expired on 2026-11-30" in said
    assert again.notices == ()  # said once
    # The day before it expired, it still matched.
    earlier, _ = run(tuning_lake, tmp_path / "keytrail.yaml", now=dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC))
    assert len(findings.excepted(earlier)) == 2


def test_enabled_false_and_a_severity_override_reach_sns(tuning_lake: Path, tmp_path: Path, aws: str) -> None:
    topic = Topic(aws)
    queue = topic.subscribe("tuned")
    tuning_path = write_tuning(
        tmp_path,
        TUNING + "    severity: low\n" + "  secrets_deletion:\n    enabled: false\n",
    )
    lake = tmp_path / "lake"
    lake.mkdir()
    tl.build(lake)
    args = ["detect", "--lake", str(lake), "--since", tl.SINCE.isoformat(), "--until", tl.UNTIL.isoformat()]
    args += ["--tuning", str(tuning_path)]
    result = runner.invoke(app, [*args, "--publish", "--topic-arn", topic.arn, "--endpoint-url", aws])
    assert result.exit_code == 0, result.output
    envelopes = topic.drain(queue)
    attributes = [{k: v["Value"] for k, v in e["MessageAttributes"].items()} for e in envelopes]
    assert len(envelopes) == 3  # 5 kms findings, 2 excepted; secrets_deletion disabled
    assert {a["detection_id"] for a in attributes} == {"kms_key_deletion_or_disable"}
    assert {a["severity"] for a in attributes} == {"low"}  # ScheduleKeyDeletion is critical as shipped
    subjects = sorted(e["Subject"] for e in envelopes)
    assert "[LOW] KMS key scheduled for deletion or disabled: alice on alias/payments-prod" in subjects, subjects

    listed = runner.invoke(app, ["alerts", "list", "--lake", str(lake), "--format", "json"])
    everything = runner.invoke(app, ["alerts", "list", "--lake", str(lake), "--format", "json", "--all"])
    shown = [json.loads(line) for line in listed.stdout.splitlines()]
    shown_all = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(shown) == 3 and all(a["outbox"]["state"] == "sent" for a in shown)
    excepted = [a for a in shown_all if a["outbox"]["state"] == "excepted"]
    assert len(shown_all) == 5 and len(excepted) == 2
    assert {a["exception"]["owner"] for a in excepted} == {"data-platform", "platform-team"}

    printed = runner.invoke(app, [*args, "--format", "json"])
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    with_exception = [a for a in lines if "exception" in a]
    assert len(lines) == 5 and len(with_exception) == 2
    nightly = next(a for a in with_exception if "nightly" in a["principal_arn"])
    assert {k: nightly["exception"][k] for k in ("reason", "owner", "expires")} == {
        "reason": "nightly key rotation, ticket SEC-1234",
        "owner": "data-platform",
        "expires": "2099-12-31",
    }


def test_backtest_compares_two_tuning_files_per_detection_per_day(tuning_lake: Path, tmp_path: Path) -> None:
    current = write_tuning(tmp_path, TUNING)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text("detections:\n  secrets_deletion: {enabled: false}\n")
    args = [
        "backtest",
        "--lake",
        str(tuning_lake),
        "--since",
        "2024-05-08",
        "--until",
        "2024-05-09",
        "--format",
        "json",
    ]
    result = runner.invoke(app, [*args, "--tuning", str(current), "--compare-tuning", str(proposed)])
    assert result.exit_code == 0, result.output
    rows = {(r["detection"], r["day"]): r for r in map(json.loads, result.stdout.splitlines())}
    kms, secrets = rows[("kms_key_deletion_or_disable", "2024-05-08")], rows[("secrets_deletion", "2024-05-08")]
    # the current file excepts the nightly role and the sandbox account; the proposed one disables secrets_deletion
    assert (kms["findings"], kms["compared"], kms["difference"]) == (3, 5, 2)
    assert (secrets["findings"], secrets["compared"], secrets["difference"]) == (1, 0, -1)
    mixed = runner.invoke(app, [*args, "--compare-tuning", str(proposed), "--compare-param", "secrets_deletion.x=1"])
    assert mixed.exit_code == 2 and "use one of them" in " ".join(mixed.stderr.split())


def test_the_report_counts_excepted_findings_and_shows_names(tuning_lake: Path, tmp_path: Path) -> None:
    from pipeline import report

    tuning = loader.load(write_tuning(tmp_path, TUNING), catalog.load("detections"))
    built = report.build(tuning_lake, tl.SINCE, tl.UNTIL, now=NOW, tuning=tuning)
    states = [r.state for r in built.alerts]
    assert states.count("excepted") == 2 and "2 of them excepted by the tuning file" in built.notes[0]
    html = report.render(built)
    assert '<div class="card"><b>2</b>excepted</div>' in html
    assert "nightly key rotation, ticket SEC-1234; owner data-platform, expires 2099-12-31" in html
    assert f"alias/payments-prod ({tl.KEY_A})" in html


def test_tuning_check_counts_matches_and_reports_stale_expired_and_disabled(tuning_lake: Path, tmp_path: Path) -> None:
    extra = """\
      - id: never-used
        match: {principal: "arn:aws:iam::111122223333:role/retired-*"}
        reason: a job that no longer runs
        owner: data-platform
      - id: alice-until-2020
        match: {principal: "arn:aws:iam::111122223333:user/alice"}
        reason: migration
        owner: alice
        expires: 2020-01-01
  secrets_deletion:
    enabled: false
    exceptions:
      - id: teardown
        match: {principal: "arn:aws:iam::111122223333:role/nightly-rotate"}
        reason: stack teardown
        owner: platform-team
"""
    path = write_tuning(tmp_path, TUNING + extra)
    args = ["tuning", "check", "--lake", str(tuning_lake), "--tuning", str(path), "--days", "5000"]
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: (r["matched"], r["status"]) for r in map(json.loads, result.stdout.splitlines())}
    assert rows == {
        "detections.kms_key_deletion_or_disable.exceptions[0]": (1, "ok"),
        "never-used": (0, "stale"),
        "alice-until-2020": (2, "expired"),  # what it would still cover
        "teardown": (0, "detection disabled"),
        "exceptions[0]": (1, "ok"),
    }
    table = runner.invoke(app, args)
    assert "1 stale exception(s)" in " ".join(table.stdout.split())
    broken = tmp_path / "broken.yaml"
    broken.write_text("detections:\n  secrets_deletion:\n    severity: urgent\n")
    invalid = runner.invoke(app, ["tuning", "check", "--tuning", str(broken), "--lake", str(tuning_lake)])
    assert invalid.exit_code == 1 and f"{broken}:3:" in "".join(invalid.stderr.split("\n"))

    shown = runner.invoke(app, ["tuning", "show", "--tuning", str(path), "--format", "json"])
    effective = {r["detection"]: r for r in map(json.loads, shown.stdout.splitlines())}
    assert effective["secrets_deletion"]["enabled"] is False
    assert [e["id"] for e in effective["kms_key_deletion_or_disable"]["exceptions"]] == [
        "detections.kms_key_deletion_or_disable.exceptions[0]",
        "never-used",
        "alice-until-2020",
        "exceptions[0]",
    ]
    assert effective["kms_decrypt_volume_spike"]["params"]["min_events"] == 100  # as shipped
