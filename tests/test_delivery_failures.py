"""An alert SNS will not take never blocks the outbox: it is made deliverable where it can be (over-long fields
cut, Subject and attributes bounded), else it ends `failed` after bounded attempts, with the reason, and it no
longer takes a storm-cap slot, fails later runs, or suppresses a later alert of the same principal.

Against the moto server over HTTP; refusals are injected by a wrapper around a real boto3 client.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import MAX_MESSAGE_BYTES, MAX_SUBJECT_CHARS, TRIM_NOTE_KEY, render_body
from pipeline.alerting.outbox import MAX_REFUSALS, Outbox, enqueue
from pipeline.alerting.sns import publish_pending
from pipeline.cli import app
from tests.test_alerts import T0, make_alert
from tests.test_sns import Topic, alert_ids

NOW = T0 + dt.timedelta(hours=2)
HOUR = dt.timedelta(hours=1)
HUGE_ARN = "arn:aws:iam::111122223333:user/" + "m" * 300_000  # a 300 KB principal ARN
TOO_LONG = ("InvalidParameter", "Invalid parameter: Message too long")
INVALID = ("InvalidParameter", "Invalid parameter: injected")


class RefusingClient:
    """A real SNS client that refuses chosen alerts' entries on every call, as SNS does a bad request
    (a per-entry failure with SenderFault), and passes everything else to moto."""

    def __init__(self, real: Any, refuse: dict[str, tuple[str, str]]) -> None:
        self.real = real
        self.refuse = refuse  # alert id -> (Code, Message)
        self.requests: list[list[str]] = []

    def publish_batch(self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> dict[str, Any]:
        self.requests.append([entry["Id"] for entry in PublishBatchRequestEntries])
        passed = [entry for entry in PublishBatchRequestEntries if entry["Id"] not in self.refuse]
        response = self.real.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=passed) if passed else {}
        failed = [
            {"Id": entry["Id"], "Code": code, "Message": message, "SenderFault": True}
            for entry in PublishBatchRequestEntries
            if entry["Id"] in self.refuse
            for code, message in [self.refuse[entry["Id"]]]
        ]
        return {"Successful": response.get("Successful", []), "Failed": failed}

    def sent_ids(self) -> set[str]:
        return {entry_id for request in self.requests for entry_id in request}


@pytest.fixture
def topic(aws: str) -> Topic:
    return Topic(aws)


def state_of(lake: Path, alert: Alert) -> str:
    with Outbox.open(lake) as box:
        return box.find(alert.alert_id).state


def runs(count: int) -> list[dt.datetime]:
    """The times of `count` publish runs, five minutes apart."""
    return [NOW + i * dt.timedelta(minutes=5) for i in range(count)]


# -- made deliverable ------------------------------------------------------------------------------------


def test_a_300_kb_principal_arn_is_delivered_with_the_field_cut_and_said_so(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    huge = make_alert(principal_arn=HUGE_ARN, account_id="1" * 300_000, context={"events": ["e1", "e2"]})
    normal = make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")
    enqueue(lake, [huge, normal], now=NOW)
    report = publish_pending(lake, topic.sns, topic.arn, now=NOW)
    assert sorted(report.sent) == sorted([huge.alert_id, normal.alert_id]) and not report.failed

    envelopes = {json.loads(e["Message"])["alert_id"]: e for e in topic.drain(queue)}
    envelope = envelopes[huge.alert_id]
    body = envelope["Message"]
    attributes = sum(len(k) + len(v["Type"]) + len(v["Value"]) for k, v in envelope["MessageAttributes"].items())
    assert len(body.encode()) + attributes + len(envelope["Subject"].encode()) <= MAX_MESSAGE_BYTES
    assert len(envelope["Subject"]) <= MAX_SUBJECT_CHARS
    assert all(len(v["Value"]) <= 256 for v in envelope["MessageAttributes"].values())
    assert envelope["MessageAttributes"]["alert_id"]["Value"] == huge.alert_id
    data = json.loads(body)
    assert data["principal_arn"].startswith("arn:aws:iam::111122223333:user/mmm") and len(data["principal_arn"]) < 5000
    note = data["context"][TRIM_NOTE_KEY]
    assert note["fields_cut"]["principal_arn"] == len(HUGE_ARN) - len(data["principal_arn"]) + 1  # + the "…"
    assert "account_id" in note["fields_cut"]
    assert data["context"]["events"] == ["e1", "e2"]  # the evidence is kept: only the over-long fields were cut
    assert json.loads(envelopes[normal.alert_id]["Message"]) == normal.to_dict()  # others untouched


def test_over_long_fields_are_cut_in_ocsf_bodies_too() -> None:
    huge = make_alert(principal_arn=HUGE_ARN, resource_arn="arn:aws:kms:us-east-1:111122223333:key/" + "k" * 300_000)
    finding = json.loads(render_body(huge, "ocsf", created=T0))
    assert len(json.dumps(finding)) < MAX_MESSAGE_BYTES
    assert set(finding["unmapped"]["context"][TRIM_NOTE_KEY]["fields_cut"]) == {"principal_arn", "resource_arn"}
    assert finding["finding_info"]["uid"] == huge.alert_id


# -- refused: bounded attempts, then `failed` ----------------------------------------------------------------


def test_an_alert_sns_keeps_refusing_ends_failed_and_stops_blocking(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    bad = make_alert(severity="critical", principal_arn="arn:aws:iam::111122223333:user/poison")
    enqueue(lake, [bad], now=NOW)
    client = RefusingClient(topic.sns, {bad.alert_id: INVALID})
    for attempt, now in enumerate(runs(MAX_REFUSALS), start=1):
        report = publish_pending(lake, client, topic.arn, now=now, sleep=lambda _: None)
        if attempt < MAX_REFUSALS:  # maybe SNS had a bad moment: it stays pending for the next run
            assert report.failed == {bad.alert_id: "InvalidParameter: Invalid parameter: injected"}
            assert state_of(lake, bad) == "pending" and not report.undeliverable
    assert report.undeliverable == {bad.alert_id: report.undeliverable[bad.alert_id]} and not report.failed
    assert f"refused it {MAX_REFUSALS} times" in report.undeliverable[bad.alert_id]
    assert "undeliverable" in str(report)
    with Outbox.open(lake) as box:
        entry = box.find(bad.alert_id)
        assert (entry.state, entry.attempts) == ("failed", MAX_REFUSALS)
        assert "Invalid parameter: injected" in (entry.last_error or "")
        assert [h.event for h in box.history(bad.alert_id)] == ["queued", "refused", "refused", "refused", "gave up"]
        assert box.counts()["failed"] == 1 and box.pending() == []
        assert [e.alert.alert_id for e in box.entries("failed")] == [bad.alert_id]

    # A later run: the failed alert is not sent again, takes no storm-cap slot, and fails nothing.
    fine = make_alert(severity="high", principal_arn="arn:aws:iam::111122223333:user/bob")
    enqueue(lake, [fine], now=NOW + HOUR)
    client.requests.clear()
    later = publish_pending(lake, client, topic.arn, now=NOW + HOUR, storm_cap=1)
    assert later.sent == (fine.alert_id,) and not later.summarized and not later.failed and not later.undeliverable
    assert bad.alert_id not in client.sent_ids()
    assert alert_ids(topic.drain(queue)) == [fine.alert_id]


def test_a_message_sns_calls_too_long_fails_at_once(lake: Path, topic: Topic) -> None:
    bad, fine = make_alert(), make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")
    enqueue(lake, [bad, fine], now=NOW)
    client = RefusingClient(topic.sns, {bad.alert_id: TOO_LONG})
    report = publish_pending(lake, client, topic.arn, now=NOW)
    assert report.sent == (fine.alert_id,) and list(report.undeliverable) == [bad.alert_id]
    assert "Message too long" in report.undeliverable[bad.alert_id]
    assert state_of(lake, bad) == "failed"


def test_throttling_and_topic_faults_on_an_entry_never_give_it_up(lake: Path, topic: Topic) -> None:
    """SNS's own trouble (not the message's) stays retryable however often it happens."""
    alert = make_alert()
    enqueue(lake, [alert], now=NOW)
    for now in runs(MAX_REFUSALS + 1):
        for code in ("InternalError", "KMSDisabled", "AuthorizationError"):
            sender = code != "InternalError"
            client = _EntryFault(topic.sns, code, sender_fault=sender)
            report = publish_pending(lake, client, topic.arn, now=now, sleep=lambda _: None, max_attempts=2)
            assert alert.alert_id in report.failed and not report.undeliverable
    assert state_of(lake, alert) == "pending"


class _EntryFault:
    def __init__(self, real: Any, code: str, *, sender_fault: bool) -> None:
        self.real, self.code, self.sender_fault = real, code, sender_fault

    def publish_batch(self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> dict[str, Any]:
        failed = [
            {"Id": e["Id"], "Code": self.code, "Message": "injected", "SenderFault": self.sender_fault}
            for e in PublishBatchRequestEntries
        ]
        return {"Successful": [], "Failed": failed}


def test_a_request_level_refusal_is_traced_to_its_entry_and_the_rest_go_out(lake: Path, topic: Topic) -> None:
    """SNS may refuse a whole PublishBatch for one bad entry (moto does, for an invalid attribute): the batch is
    split so only that alert is refused; the others are sent in the same run."""
    queue = topic.subscribe("all")
    alerts = [make_alert(principal_arn=f"arn:aws:iam::111122223333:user/u{i}") for i in range(4)]
    enqueue(lake, alerts, now=NOW)
    bad = alerts[2].alert_id
    client = _WholeCallRefusal(topic.sns, bad)
    report = publish_pending(lake, client, topic.arn, now=NOW, sleep=lambda _: None)
    assert sorted(report.sent) == sorted(a.alert_id for a in alerts if a.alert_id != bad)
    assert list(report.failed) == [bad] and state_of(lake, alerts[2]) == "pending"
    assert sorted(alert_ids(topic.drain(queue))) == sorted(report.sent)


class _WholeCallRefusal:
    """Raises InvalidParameter for any PublishBatch call that carries `bad`, as moto does for an empty attribute."""

    def __init__(self, real: Any, bad: str) -> None:
        self.real, self.bad = real, bad

    def publish_batch(self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        if any(entry["Id"] == self.bad for entry in PublishBatchRequestEntries):
            error = {"Code": "InvalidParameter", "Message": "The message attribute 'x' must contain non-empty value"}
            raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "PublishBatch")
        return self.real.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=PublishBatchRequestEntries)


def test_an_alert_too_big_even_after_trimming_fails_without_a_call(lake: Path, topic: Topic) -> None:
    # attack ids are part of the contract and never cut: 40,000 of them (~440 KB) cannot fit in 256 KB
    hopeless = make_alert(attack=tuple(f"T{i:07d}" for i in range(40_000)))
    fine = make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")
    enqueue(lake, [hopeless, fine], now=NOW)
    client = RefusingClient(topic.sns, {})
    report = publish_pending(lake, client, topic.arn, now=NOW)
    assert report.sent == (fine.alert_id,) and hopeless.alert_id not in client.sent_ids()
    assert "even after trimming" in report.undeliverable[hopeless.alert_id]
    assert state_of(lake, hopeless) == "failed"


# -- suppression counts only alerts that paged ---------------------------------------------------------------


def test_an_alert_suppressed_by_one_that_never_went_out_pages_in_its_place(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    first = make_alert(first_seen=T0)
    enqueue(lake, [first], now=NOW)
    client = RefusingClient(topic.sns, {first.alert_id: INVALID})
    publish_pending(lake, client, topic.arn, now=NOW)  # refused once: still pending, still expected to page
    second = make_alert(first_seen=T0 + HOUR)  # same principal and key, within the 6 h re-alert interval
    third = make_alert(first_seen=T0 + 2 * HOUR)
    report = enqueue(lake, [second, third], now=NOW + HOUR)
    assert set(report.suppressed) == {second.alert_id, third.alert_id}

    for now in runs(MAX_REFUSALS)[1:]:
        last = publish_pending(lake, client, topic.arn, now=now + HOUR)
    assert list(last.undeliverable) == [first.alert_id]
    assert last.released == (second.alert_id,)
    with Outbox.open(lake) as box:
        assert box.find(second.alert_id).state == "pending"
        assert box.find(third.alert_id).suppressed_by == second.alert_id  # now measured from the one that pages
        assert [h.event for h in box.history(second.alert_id)] == ["suppressed", "released"]

    again = publish_pending(lake, client, topic.arn, now=NOW + 2 * HOUR)
    assert again.sent == (second.alert_id,)
    assert alert_ids(topic.drain(queue)) == [second.alert_id]


def test_a_failed_alert_suppresses_nothing_later(lake: Path, topic: Topic) -> None:
    first = make_alert(first_seen=T0)
    enqueue(lake, [first], now=NOW)
    publish_pending(lake, RefusingClient(topic.sns, {first.alert_id: TOO_LONG}), topic.arn, now=NOW)
    assert state_of(lake, first) == "failed"
    later = make_alert(first_seen=T0 + HOUR)
    assert enqueue(lake, [later], now=NOW + HOUR).queued == (later.alert_id,)


# -- the CLI: list, publish's exit code and advice, retry --------------------------------------------------------


def test_cli_reports_the_failed_alert_then_lists_and_retries_it(
    lake: Path, topic: Topic, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = topic.subscribe("all")
    bad = make_alert(principal_arn="arn:aws:iam::111122223333:user/poison")
    enqueue(lake, [bad], now=NOW)
    refusing = RefusingClient(topic.sns, {bad.alert_id: TOO_LONG})
    monkeypatch.setattr("pipeline.aws.client", lambda *args, **kwargs: refusing)
    runner = CliRunner()
    publish = ["alerts", "publish", "--lake", str(lake), "--topic-arn", topic.arn, "--endpoint-url", aws]
    refused = runner.invoke(app, publish)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1 and bad.alert_id[:12] in said and "Message too long" in said
    assert "keytrail alerts show" in said and "keytrail alerts retry" in said

    again = runner.invoke(app, publish)  # nothing failed in this run: a failed alert does not fail every run
    assert again.exit_code == 0, again.output

    listed = runner.invoke(app, ["alerts", "list", "--lake", str(lake), "--state", "failed", "--format", "json"])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(row["alert_id"], row["outbox"]["state"]) for row in rows] == [(bad.alert_id, "failed")]
    table = runner.invoke(app, ["alerts", "list", "--lake", str(lake)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "failed" in table.output

    retried = runner.invoke(app, ["alerts", "retry", bad.alert_id[:12], "--lake", str(lake)])
    assert retried.exit_code == 0 and "pending" in retried.output and "keytrail alerts publish" in retried.output
    assert state_of(lake, bad) == "pending"
    not_failed = runner.invoke(app, ["alerts", "retry", bad.alert_id[:12], "--lake", str(lake)])
    assert not_failed.exit_code == 1 and "not failed" in not_failed.output

    refusing.refuse.clear()  # the cause was fixed
    fixed = runner.invoke(app, publish)
    assert fixed.exit_code == 0, fixed.output
    assert alert_ids(topic.drain(queue)) == [bad.alert_id] and state_of(lake, bad) == "sent"
