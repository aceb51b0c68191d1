"""`keytrail demo`: the demo function end to end (a shorter trail, same code path), and its pure parts."""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.request
from pathlib import Path

import pytest

from pipeline import demo
from pipeline.alerting.alert import Alert
from pipeline.alerting.outbox import OutboxEntry
from pipeline.cli.common import make_console
from pipeline.simulate.results import InjectedIncident

pytest_plugins = ["prefect_fixtures"]

T0 = dt.datetime(2024, 5, 8, 10, 0, tzinfo=dt.UTC)


def alert(alert_id: str, detection_id: str = "kms_key_deletion_or_disable", minutes: int = 0) -> Alert:
    moment = T0 + dt.timedelta(minutes=minutes)
    return Alert(alert_id, detection_id, "t", "high", "111122223333", "us-east-1", None, None, moment, moment, 1)


def entry(
    alert_id: str, state: str = "sent", delivery: str | None = "message", summary: str | None = None
) -> OutboxEntry:
    return OutboxEntry(alert(alert_id), state, T0, T0, "m", delivery, summary, None, 1, None)


def envelope(alert_id: str, subject: str = "[HIGH] t") -> str:
    attributes = {"alert_id": {"Type": "String", "Value": alert_id}, "severity": {"Type": "String", "Value": "high"}}
    message = json.dumps({"alert_id": alert_id, "severity": "high"})
    return json.dumps({"Type": "Notification", "MessageId": f"m-{alert_id}", "Subject": subject, "Message": message,
                       "MessageAttributes": attributes})  # fmt: skip


def test_envelope_parsing_reads_subject_attributes_and_alert_json() -> None:
    message = demo.parse_envelope(envelope("abc123", "[HIGH] KMS key scheduled for deletion"))
    expected = ("abc123", "high", "[HIGH] KMS key scheduled for deletion", "m-abc123")
    assert (message.alert_id, message.severity, message.subject, message.message_id) == expected
    assert message.body["alert_id"] == "abc123"
    # A summary written as plain text still parses; its id then comes from the attribute alone.
    raw = json.loads(envelope("sum1"))
    raw["Message"] = "47 more alerts"
    assert demo.parse_envelope(json.dumps(raw)).alert_id == "sum1"


def test_reconciliation_counts_summaries_and_flags_missing_duplicate_and_pending() -> None:
    entries = [entry("a"), entry("b", delivery="summary", summary="s1"), entry("c", delivery="summary", summary="s1"),
               entry("d", state="suppressed", delivery=None)]  # fmt: skip
    received = [demo.parse_envelope(envelope(i)) for i in ("a", "s1")]
    assert demo.reconcile(entries, received).matches
    assert demo.reconcile(entries, received[:1]).missing == {"s1"}
    assert demo.reconcile(entries, [*received, received[0]]).duplicates == ("a",)
    assert demo.reconcile(entries, [*received, demo.parse_envelope(envelope("zz"))]).unexpected == {"zz"}
    pending = demo.reconcile([*entries, entry("e", state="pending", delivery=None)], received)
    assert pending.pending == ("e",) and not pending.matches
    # an alert SNS refused for good was not delivered either: the demo must not call that a match
    failed = demo.reconcile([*entries, entry("f", state="failed", delivery=None)], received)
    assert failed.pending == ("f",) and not failed.matches


def test_incidents_are_matched_to_alerts_of_their_detection_near_their_time() -> None:
    incident = InjectedIncident(
        name="key_deletion",
        detection_id="kms_key_deletion_or_disable",
        principal_arn=None,
        resource_arn=None,
        account_id="111122223333",
        start=T0,
        end=T0 + dt.timedelta(minutes=5),
        event_ids=["e1"],
    )
    assert demo.incident_alerts([incident], [alert("x", "secrets_deletion"), alert("y", minutes=3)]) == {
        "key_deletion": "y"
    }
    assert demo.incident_alerts([incident], [alert("late", minutes=300)]) == {"key_deletion": None}


def test_scoped_environment_restores_what_it_changed() -> None:
    env = {"KEEP": "1", "AWS_PROFILE": "prod", "KEYTRAIL_TOPIC_ARN": "old"}
    with demo.scoped_environment({"KEYTRAIL_TOPIC_ARN": "new", "NEW": "x"}, drop=("AWS_PROFILE",), env=env):
        assert env == {"KEEP": "1", "KEYTRAIL_TOPIC_ARN": "new", "NEW": "x"}
    assert env == {"KEEP": "1", "AWS_PROFILE": "prod", "KEYTRAIL_TOPIC_ARN": "old"}


def test_prepare_lake_replaces_only_a_demo_lake(tmp_path: Path) -> None:
    lake = tmp_path / "demo-lake"
    demo.prepare_lake(lake)
    (lake / "events").mkdir()
    demo.prepare_lake(lake)  # a lake the demo made is replaced
    assert not (lake / "events").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo lake"):
        demo.prepare_lake(precious)
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.xdist_group("prefect")
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("lake_kind", ["folder", "s3"])
def test_demo_messages_match_the_outbox_and_every_incident_alerts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], lake_kind: str
) -> None:
    from flows.demo import run_demo

    # "s3": the whole demo against a lake on S3 in the local endpoint (commits by conditional writes, a replica)
    lake = tmp_path / "lake" if lake_kind == "folder" else "s3://keytrail-demo-lake/lake"

    before = {name: os.environ.get(name) for name in ("KEYTRAIL_TOPIC_ARN", "KEYTRAIL_ENDPOINT_URL", "AWS_PROFILE")}
    console = make_console(record=True, width=160)  # as `keytrail demo` makes it
    with demo.demo_environment():
        # Same code path as `keytrail demo`, on 3 days of a lighter trail (~2k objects instead of ~9k).
        outcome = run_demo(lake, days=3, seed=7, today=dt.date(2024, 5, 9), events_per_day=2000,
                           console=console)  # fmt: skip

    sent = {e.alert.alert_id for e in outcome.entries if e.state == "sent"}
    received = [m.alert_id for m in outcome.messages]
    assert sent and sorted(received) == sorted(sent)  # each alert exactly once, nothing else
    assert all(e.delivery == "message" for e in outcome.entries if e.state == "sent")
    assert outcome.reconciliation.matches
    assert len(outcome.simulation.incidents) == 13
    missed = [name for name, alert_id in outcome.incidents_found.items() if alert_id is None]
    assert missed == []
    assert outcome.ok

    text = console.export_text()
    assert "SNS messages match the outbox" in text and "Injected incidents found (13/13)" in text
    assert "keytrail query run alert_evidence" in text
    # The pipeline verified the final day's signed trail: every log file of it, nothing failed.
    verify = outcome.final["verify"]
    assert verify["problems"] == 0 and verify["verified"] == verify["log_files"] > 0
    assert f"{verify['log_files']:,} of {verify['log_files']:,} log files verified for this period" in text
    out, err = capfd.readouterr()
    for noise in ("werkzeug", "Traceback", "ERROR", "telemetry", '"GET /'):
        assert noise not in out + err + text
    # Everything the demo started is stopped, and the environment is as it was.
    assert {name: os.environ.get(name) for name in before} == before
    endpoint = text.split("local AWS endpoint (moto) at ", 1)[1].split()[0]
    with pytest.raises(OSError):
        urllib.request.urlopen(endpoint, timeout=2)


def test_demo_and_serve_help_have_examples() -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    for command in ("demo", "serve"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert f"Example: keytrail {command}" in result.output
