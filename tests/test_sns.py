"""Publishing the outbox to SNS, against the moto server over HTTP: a real topic with SQS subscriptions.

Messages are read back from SQS (the standard SNS envelope) to check what subscribers really get. Faults are
injected by a wrapper around a real boto3 client, so every call that succeeds still goes through moto.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from typer.testing import CliRunner

from pipeline import aws
from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import MAX_MESSAGE_BYTES, SUMMARY_DETECTION_ID, TRIM_NOTE_KEY, subject
from pipeline.alerting.outbox import Outbox, enqueue
from pipeline.alerting.sns import PublishError, backoff, publish_pending
from pipeline.cli import app
from tests.test_alerts import T0, make_alert

NOW = T0 + dt.timedelta(hours=2)
NO_SUPPRESSION = dt.timedelta(0)


class Topic:
    """An SNS topic on the moto server with an SQS queue per subscription."""

    def __init__(self, endpoint: str, name: str = "keytrail-alerts") -> None:
        self.sns = aws.client("sns", endpoint_url=endpoint)
        self.sqs = aws.client("sqs", endpoint_url=endpoint)
        self.fifo = name.endswith(".fifo")
        attributes = {"FifoTopic": "true"} if self.fifo else {}
        self.arn = self.sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]

    def subscribe(self, queue: str, filter_policy: dict[str, Any] | None = None) -> str:
        attributes = {"FifoQueue": "true"} if self.fifo else {}
        url = self.sqs.create_queue(QueueName=queue + (".fifo" if self.fifo else ""), Attributes=attributes)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sub_attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
        self.sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=queue_arn, Attributes=sub_attributes)
        return url

    def drain_messages(self, url: str) -> list[dict[str, Any]]:
        """Every SQS message waiting in the queue, with its attributes (deleted as read: FIFO groups unlock)."""
        drained: list[dict[str, Any]] = []
        receive = {"QueueUrl": url, "MaxNumberOfMessages": 10, "AttributeNames": ["All"]}
        while messages := self.sqs.receive_message(**receive).get("Messages", []):
            for message in messages:
                drained.append(message)
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return drained

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Every SNS envelope waiting in the queue (removed from it)."""
        return [json.loads(message["Body"]) for message in self.drain_messages(url)]


def alert_ids(envelopes: Sequence[dict[str, Any]]) -> list[str]:
    return [json.loads(envelope["Message"])["alert_id"] for envelope in envelopes]


def spread(count: int, severities: Sequence[str] = ("high",)) -> list[Alert]:
    """`count` distinct alerts (one principal each)."""
    return [
        make_alert(principal_arn=f"arn:aws:iam::111122223333:user/u{i:03d}", severity=severities[i % len(severities)])
        for i in range(count)
    ]


class FaultyClient:
    """A real SNS client whose PublishBatch fails chosen entries (or whole calls) on chosen calls."""

    def __init__(
        self,
        real: Any,
        *,
        fail_entries: dict[int, dict[str, bool]] | None = None,
        raise_on: dict[int, str] | None = None,
    ) -> None:
        self.real = real
        self.fail_entries = fail_entries or {}  # call number -> {entry id: SenderFault}
        self.raise_on = raise_on or {}  # call number -> error code raised instead of calling SNS
        self.requests: list[list[str]] = []

    def publish_batch(self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> dict[str, Any]:
        call = len(self.requests)
        self.requests.append([entry["Id"] for entry in PublishBatchRequestEntries])
        if self.raise_on.get(call) == "connection":
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")
        if call in self.raise_on:
            code = self.raise_on[call]
            status = 400 if code in ("Throttling", "AuthorizationError") else 500
            raise ClientError(
                {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "PublishBatch",
            )
        failing = self.fail_entries.get(call, {})
        passed = [entry for entry in PublishBatchRequestEntries if entry["Id"] not in failing]
        response = self.real.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=passed) if passed else {}
        failed = [
            {
                "Id": entry_id,
                "Code": "InvalidParameter" if sender else "InternalError",
                "Message": "injected",
                "SenderFault": sender,
            }
            for entry_id, sender in failing.items()
        ]
        return {"Successful": response.get("Successful", []), "Failed": failed}


@pytest.fixture
def topic(aws: str) -> Topic:
    return Topic(aws)


def test_messages_carry_subject_attributes_and_the_alert_json(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(3, ["critical", "medium", "high"])
    enqueue(lake, alerts, now=NOW)
    report = publish_pending(lake, topic.sns, topic.arn, now=NOW)
    assert report.messages == 3 and report.calls == 1 and not report.failed

    envelopes = {json.loads(e["Message"])["alert_id"]: e for e in topic.drain(queue)}
    assert sorted(envelopes) == sorted(a.alert_id for a in alerts)
    with Outbox.open(lake) as box:
        for alert in alerts:
            envelope = envelopes[alert.alert_id]
            assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic.arn
            assert envelope["Subject"] == subject(alert) and len(envelope["Subject"]) <= 100
            assert envelope["Subject"].startswith(f"[{alert.severity.upper()}] KMS decrypt volume spike: u0")
            assert envelope["MessageAttributes"] == {
                "severity": {"Type": "String", "Value": alert.severity},
                "detection_id": {"Type": "String", "Value": "kms_decrypt_volume_spike"},
                "account_id": {"Type": "String", "Value": "111122223333"},
                "alert_id": {"Type": "String", "Value": alert.alert_id},
            }
            assert json.loads(envelope["Message"]) == alert.to_dict()
            entry = box.find(alert.alert_id)
            assert (entry.state, entry.message_id, entry.sent_at) == ("sent", envelope["MessageId"], NOW)
    assert report.sent[0] == alerts[0].alert_id  # most severe first


def test_filter_policy_subscription_gets_only_high_and_critical(lake: Path, topic: Topic) -> None:
    everything = topic.subscribe("all")
    paging = topic.subscribe("paging", {"severity": ["high", "critical"]})
    alerts = spread(10, ["info", "low", "medium", "high", "critical"])
    enqueue(lake, alerts, now=NOW)
    publish_pending(lake, topic.sns, topic.arn, now=NOW)
    assert len(topic.drain(everything)) == 10
    received = topic.drain(paging)
    assert sorted(alert_ids(received)) == sorted(a.alert_id for a in alerts if a.severity in ("high", "critical"))


def test_a_rerun_publishes_nothing(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(4)
    enqueue(lake, alerts, now=NOW)
    publish_pending(lake, topic.sns, topic.arn, now=NOW)
    assert len(topic.drain(queue)) == 4
    # detection re-run over an overlapping range: same ids, nothing new
    assert len(enqueue(lake, alerts, now=NOW + dt.timedelta(minutes=5)).known) == 4
    again = publish_pending(lake, topic.sns, topic.arn, now=NOW + dt.timedelta(minutes=5))
    assert again.messages == 0 and again.calls == 0
    assert topic.drain(queue) == []


class Crash(Exception):
    pass


def crash_once(calls: list[Sequence[str]]) -> Any:
    def hook(entry_ids: Sequence[str]) -> None:
        calls.append(entry_ids)
        if len(calls) == 1:
            raise Crash("killed after SNS accepted the batch, before the outbox recorded it")

    return hook


def test_crash_between_publish_and_record_repeats_at_most_that_batch(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(15)
    enqueue(lake, alerts, now=NOW)
    accepted: list[Sequence[str]] = []
    with pytest.raises(Crash):
        publish_pending(lake, topic.sns, topic.arn, now=NOW, on_accepted=crash_once(accepted))
    with Outbox.open(lake) as box:
        assert len(box.pending()) == 15  # nothing recorded: the crash came first
    report = publish_pending(lake, topic.sns, topic.arn, now=NOW + dt.timedelta(minutes=5))
    assert len(report.sent) == 15

    received = Counter(alert_ids(topic.drain(queue)))
    assert set(received) == {a.alert_id for a in alerts}  # none lost
    repeated = {alert_id for alert_id, count in received.items() if count > 1}
    assert repeated == set(accepted[0]) and len(repeated) == 10  # only the crashed batch, once more
    assert max(received.values()) == 2


def test_fifo_topic_deduplicates_even_the_crashed_batch(aws: str, lake: Path) -> None:
    topic = Topic(aws, "keytrail-alerts.fifo")
    queue = topic.subscribe("all")
    alerts = [*spread(12), make_alert(detection_id="secrets_deletion", severity="critical")]
    enqueue(lake, alerts, now=NOW)
    with pytest.raises(Crash):
        publish_pending(lake, topic.sns, topic.arn, now=NOW, on_accepted=crash_once([]))
    publish_pending(lake, topic.sns, topic.arn, now=NOW)

    messages = topic.drain_messages(queue)
    received = Counter(alert_ids([json.loads(m["Body"]) for m in messages]))
    assert received == Counter({a.alert_id: 1 for a in alerts})  # MessageDeduplicationId = alert_id
    groups = {json.loads(json.loads(m["Body"])["Message"])["detection_id"]: m["Attributes"] for m in messages}
    assert {name: attrs["MessageGroupId"] for name, attrs in groups.items()} == {
        "kms_decrypt_volume_spike": "kms_decrypt_volume_spike",
        "secrets_deletion": "secrets_deletion",
    }


def test_partial_batch_failure_retries_only_the_failed_entries_with_backoff(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(6)
    enqueue(lake, alerts, now=NOW)
    flaky = {alerts[1].alert_id: False, alerts[4].alert_id: False}  # SNS-side faults: worth a retry
    client = FaultyClient(topic.sns, fail_entries={0: flaky, 1: {alerts[4].alert_id: False}})
    sleeps: list[float] = []
    report = publish_pending(lake, client, topic.arn, now=NOW, sleep=sleeps.append)

    assert sorted(client.requests[1]) == sorted(flaky)  # only the failed ones
    assert client.requests[2] == [alerts[4].alert_id]
    assert sleeps == [backoff(1), backoff(2)] and backoff(2) == 2 * backoff(1)
    assert (report.calls, report.retries, len(report.sent), report.failed) == (3, 2, 6, {})
    assert Counter(alert_ids(topic.drain(queue))) == Counter({a.alert_id: 1 for a in alerts})
    with Outbox.open(lake) as box:
        assert [h.event for h in box.history(alerts[4].alert_id)] == ["queued", "sent"]


def test_rejected_entry_is_not_retried_and_stays_pending(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(3)
    enqueue(lake, alerts, now=NOW)
    bad = alerts[2].alert_id
    client = FaultyClient(topic.sns, fail_entries={0: {bad: True}})  # sender fault: the request is wrong
    report = publish_pending(lake, client, topic.arn, now=NOW, sleep=lambda _: None)
    assert len(client.requests) == 1 and report.failed == {bad: "InvalidParameter: injected"}
    assert "1 failed and stay pending" in str(report)
    with Outbox.open(lake) as box:
        entry = box.find(bad)
        assert (entry.state, entry.attempts, entry.last_error) == ("pending", 1, "InvalidParameter: injected")
    publish_pending(lake, topic.sns, topic.arn, now=NOW)  # fixed: the next run sends it
    assert sorted(alert_ids(topic.drain(queue))) == sorted(a.alert_id for a in alerts)


def test_throttling_and_server_errors_are_retried(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(2)
    enqueue(lake, alerts, now=NOW)
    client = FaultyClient(topic.sns, raise_on={0: "Throttling", 1: "InternalError"})
    sleeps: list[float] = []
    report = publish_pending(lake, client, topic.arn, now=NOW, sleep=sleeps.append)
    assert len(sleeps) == 2 and report.retries == 2 and len(report.sent) == 2
    assert Counter(alert_ids(topic.drain(queue))) == Counter({a.alert_id: 1 for a in alerts})


def test_endless_throttling_stops_with_a_clear_error(lake: Path, topic: Topic) -> None:
    enqueue(lake, spread(2), now=NOW)
    client = FaultyClient(topic.sns, raise_on=dict.fromkeys(range(10), "Throttling"))
    with pytest.raises(PublishError, match="again later"):
        publish_pending(lake, client, topic.arn, now=NOW, sleep=lambda _: None, max_attempts=3)
    assert len(client.requests) == 3


def test_missing_topic_is_a_clear_error_and_alerts_stay_pending(lake: Path, topic: Topic) -> None:
    alerts = spread(3)
    enqueue(lake, alerts, now=NOW)
    missing = topic.arn + "-gone"
    with pytest.raises(PublishError, match="does not exist") as raised:
        publish_pending(lake, topic.sns, missing, now=NOW, sleep=lambda _: pytest.fail("not retried"))
    assert "--topic-arn" in str(raised.value) and "3 alert(s) stay pending" in str(raised.value)
    with Outbox.open(lake) as box:
        assert [e.state for e in box.entries()] == ["pending"] * 3
        assert all("NotFound" in (e.last_error or "") for e in box.entries())


def test_unreachable_endpoint_fails_without_more_rounds_and_says_what_to_check(lake: Path, topic: Topic) -> None:
    enqueue(lake, spread(1), now=NOW)
    client = FaultyClient(topic.sns, raise_on={0: "connection"})  # as the client raises after its own retries
    with pytest.raises(PublishError, match="cannot reach SNS: check --endpoint-url"):
        publish_pending(lake, client, topic.arn, now=NOW, sleep=pytest.fail)
    assert len(client.requests) == 1
    with Outbox.open(lake) as box:
        assert "EndpointConnectionError" in (box.pending()[0].last_error or "")


def test_access_denied_says_which_permission(lake: Path, topic: Topic) -> None:
    enqueue(lake, spread(1), now=NOW)
    client = FaultyClient(topic.sns, raise_on={0: "AuthorizationError"})
    with pytest.raises(PublishError, match="sns:Publish"):
        publish_pending(lake, client, topic.arn, now=NOW)
    with Outbox.open(lake) as box:
        assert box.counts()["pending"] == 1


def test_oversized_alert_is_trimmed_not_dropped(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    evidence = [{"event_id": f"ev-{i:06d}", "source_ip": "203.0.113.9", "user_agent": "x" * 80} for i in range(6000)]
    big = [
        make_alert(principal_arn=f"arn:aws:iam::111122223333:user/u{i}", context={"events": evidence}) for i in range(2)
    ]
    enqueue(lake, big, now=NOW)
    client = FaultyClient(topic.sns)
    report = publish_pending(lake, client, topic.arn, now=NOW)
    assert len(report.sent) == 2
    assert [len(ids) for ids in client.requests] == [1, 1]  # two ~256 KB messages never share a batch

    for envelope in topic.drain(queue):
        body = envelope["Message"]
        attrs = sum(len(k) + len(v["Type"]) + len(v["Value"]) for k, v in envelope["MessageAttributes"].items())
        assert len(body.encode()) + attrs <= MAX_MESSAGE_BYTES
        data = json.loads(body)
        kept = len(data["context"]["events"])
        assert 0 < kept < 6000 and data["context"][TRIM_NOTE_KEY]["items_cut"] == {"events": 6000 - kept}
        assert data["event_count"] == 4200 and data["alert_id"] in {a.alert_id for a in big}


def test_storm_cap_sends_the_most_severe_then_one_summary(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alerts = spread(7, ["low", "critical", "medium", "high"])
    enqueue(lake, alerts, now=NOW)
    report = publish_pending(lake, topic.sns, topic.arn, now=NOW, storm_cap=3)
    assert report.messages == 4 and len(report.sent) == 3 and len(report.summarized) == 4

    envelopes = topic.drain(queue)
    by_detection = {json.loads(e["Message"])["detection_id"]: e for e in envelopes}
    individual = [
        json.loads(e["Message"]) for e in envelopes if json.loads(e["Message"])["detection_id"] != SUMMARY_DETECTION_ID
    ]
    assert sorted(a["severity"] for a in individual) == ["critical", "critical", "high"]
    summary = by_detection[SUMMARY_DETECTION_ID]
    # held: medium, medium, low, low -> the summary pages at the highest held severity
    assert summary["Subject"] == "[MEDIUM] 4 more alerts held back by the storm cap (3 per run)"
    listed = {item["alert_id"] for item in json.loads(summary["Message"])["context"]["alerts"]}
    assert listed == set(report.summarized)
    with Outbox.open(lake) as box:
        for alert_id in report.summarized:
            entry = box.find(alert_id)
            assert (entry.state, entry.delivery, entry.message_id) == ("sent", "summary", summary["MessageId"])
    assert publish_pending(lake, topic.sns, topic.arn, now=NOW).messages == 0


def test_ocsf_format_over_sns(lake: Path, topic: Topic) -> None:
    queue = topic.subscribe("all")
    alert = make_alert()
    enqueue(lake, [alert], now=NOW)
    publish_pending(lake, topic.sns, topic.arn, now=NOW + dt.timedelta(minutes=3), fmt="ocsf")
    (envelope,) = topic.drain(queue)
    finding = json.loads(envelope["Message"])
    assert finding["class_uid"] == 2004 and finding["finding_info"]["uid"] == alert.alert_id
    assert finding["time"] == int(NOW.timestamp() * 1000)  # when the alert entered the outbox
    assert envelope["MessageAttributes"]["alert_id"]["Value"] == alert.alert_id


def test_cli_publish_list_and_show(lake: Path, topic: Topic, aws: str) -> None:
    queue = topic.subscribe("all")
    runner = CliRunner()
    missing = runner.invoke(app, ["alerts", "list", "--lake", str(lake)])
    assert missing.exit_code == 1 and "keytrail detect" in missing.output

    alerts = spread(3)
    enqueue(lake, alerts, now=NOW)
    enqueue(lake, [make_alert(first_seen=T0 + dt.timedelta(hours=1), principal_arn=alerts[0].principal_arn)], now=NOW)
    refused = runner.invoke(
        app, ["alerts", "publish", "--lake", str(lake), "--topic-arn", topic.arn + "x", "--endpoint-url", aws]
    )
    assert refused.exit_code == 1 and "does not exist" in refused.output

    published = runner.invoke(
        app, ["alerts", "publish", "--lake", str(lake), "--topic-arn", topic.arn, "--endpoint-url", aws]
    )
    assert published.exit_code == 0, published.output
    assert "3 messages: 3 alerts sent" in " ".join(published.output.split())
    envelopes = {json.loads(e["Message"])["alert_id"]: e for e in topic.drain(queue)}

    listed = runner.invoke(app, ["alerts", "list", "--lake", str(lake), "--format", "json"])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert Counter(row["outbox"]["state"] for row in rows) == {"sent": 3, "suppressed": 1}
    for row in rows:
        if row["outbox"]["state"] == "sent":
            assert row["outbox"]["message_id"] == envelopes[row["alert_id"]]["MessageId"]
    table = runner.invoke(app, ["alerts", "list", "--lake", str(lake), "--state", "sent"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and all(a.alert_id[:12] in table.output for a in alerts)

    shown = runner.invoke(app, ["alerts", "show", alerts[1].alert_id[:12], "--lake", str(lake)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and alerts[1].alert_id in shown.output
    assert envelopes[alerts[1].alert_id]["MessageId"] in shown.output and "queued" in shown.output


def test_detect_publish_queues_then_publishes_once(lake: Path, topic: Topic, aws: str, tmp_path: Path) -> None:
    from pipeline.ingest import ingest
    from tests.conftest import FIXTURES
    from tests.trails import log_bytes, log_key, write_local

    queue = topic.subscribe("all")
    deletion = json.loads((FIXTURES / "events" / "kms_schedule_key_deletion.json").read_text())
    trail = tmp_path / "trail"
    write_local(trail, log_key(dt.date(2024, 5, 1), "20240501T1020Z_a", account="111122223333"), log_bytes([deletion]))
    ingest(str(trail), lake)
    command = [
        "detect",
        "--lake",
        str(lake),
        "--since",
        "2024-05-01T10:00:00Z",
        "--until",
        "2024-05-01T11:00:00Z",
        "--detection",
        "kms_key_deletion_or_disable",
        "--format",
        "json",
        "--publish",
        "--topic-arn",
        topic.arn,
        "--endpoint-url",
        aws,
    ]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    (envelope,) = topic.drain(queue)
    alert = json.loads(envelope["Message"])
    assert alert["detection_id"] == "kms_key_deletion_or_disable" and alert["principal_arn"].endswith("user/alice")
    assert envelope["Subject"].startswith("[CRITICAL] ") and envelope["Subject"].endswith(": alice on key/1234abcd")

    again = CliRunner().invoke(app, command)  # the same window again: known, nothing sent
    assert again.exit_code == 0 and "1 already known" in again.output
    assert topic.drain(queue) == []


def _two_deletions_two_hours_apart(lake: Path, tmp_path: Path) -> None:
    """alice schedules the same key's deletion at 10:15 and again at 12:15: two alert ids (two 1-hour buckets),
    one dedup key."""
    from pipeline.ingest import ingest
    from tests.conftest import FIXTURES
    from tests.trails import log_bytes, log_key, write_local

    deletion = json.loads((FIXTURES / "events" / "kms_schedule_key_deletion.json").read_text())
    again = {**deletion, "eventTime": "2024-05-01T12:15:42Z", "eventID": "ca01996a-second-deletion"}
    trail = tmp_path / "trail"
    key = log_key(dt.date(2024, 5, 1), "20240501T1220Z_a", account="111122223333")
    write_local(trail, key, log_bytes([deletion, again]))
    ingest(str(trail), lake)


def test_detect_publish_takes_realert_intervals_from_the_queries_dir(
    lake: Path, topic: Topic, aws: str, tmp_path: Path
) -> None:
    """Bug: `detect --publish --queries DIR` took the re-alert intervals from the repository's queries/, not DIR."""
    import shutil

    from pipeline import catalog

    queries = tmp_path / "queries"
    shutil.copytree(catalog.default_queries_dir(), queries)
    spec = queries / "detections" / "kms_key_deletion_or_disable.yml"
    assert "realert:" not in spec.read_text()  # the repository's tree: the 6 h setting applies
    spec.write_text(spec.read_text().replace("lookback: 0s\n", "lookback: 0s\nrealert: 1h\n"))
    publish = [
        "--detection",
        "kms_key_deletion_or_disable",
        "--publish",
        "--topic-arn",
        topic.arn,
        "--endpoint-url",
        aws,
    ]

    def states(lake_path: Path, *extra: str) -> list[str]:
        """Two hourly runs, 10:00 and 12:00, each finding one of the deletions; the outbox states, oldest first."""
        _two_deletions_two_hours_apart(lake_path, tmp_path / lake_path.name)
        for since, until in (("10:00", "11:00"), ("12:00", "13:00")):
            window = ["--since", f"2024-05-01T{since}:00Z", "--until", f"2024-05-01T{until}:00Z"]
            result = CliRunner().invoke(app, ["detect", "--lake", str(lake_path), *window, *publish, *extra])
            assert result.exit_code == 0, result.output
        with Outbox.open(lake_path) as box:
            return [entry.state for entry in sorted(box.entries(), key=lambda e: e.alert.first_seen)]

    # DIR says 1 h: the second deletion, 2 h after the first, pages again.
    assert states(lake, "--queries", str(queries)) == ["sent", "sent"]
    # The repository's tree (no `realert:`, the 6 h setting): the second one is suppressed.
    other = tmp_path / "other-lake"
    other.mkdir()
    assert states(other) == ["sent", "suppressed"]


def test_detect_publish_loads_the_catalog_once(
    lake: Path, topic: Topic, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One load (and validation) of the catalog serves the run and the re-alert policy (it used to be three)."""
    from pipeline import catalog

    loads: list[object] = []
    real_load = catalog.load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    _two_deletions_two_hours_apart(lake, tmp_path / "trail")
    monkeypatch.setattr(catalog, "load", counting_load)
    window = ["--since", "2024-05-01T10:00:00Z", "--until", "2024-05-01T11:00:00Z"]
    command = ["detect", "--lake", str(lake), *window, "--publish", "--topic-arn", topic.arn, "--endpoint-url", aws]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "1 alerts sent" in " ".join(result.output.split())
    assert len(loads) == 1


def test_publish_without_a_topic_queues_then_exits_1_saying_what_to_do(
    lake: Path, topic: Topic, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.alerting.publish import no_topic

    monkeypatch.delenv("KEYTRAIL_TOPIC_ARN", raising=False)
    queue = topic.subscribe("all")
    _two_deletions_two_hours_apart(lake, tmp_path / "trail")
    window = ["--since", "2024-05-01T10:00:00Z", "--until", "2024-05-01T11:00:00Z"]
    detected = CliRunner().invoke(app, ["detect", "--lake", str(lake), *window, "--publish", "--endpoint-url", aws])
    assert detected.exit_code == 1
    said = " ".join(detected.output.split())
    assert "alert outbox: 1 queued" in said and f"error: {no_topic(1)}" in said
    with Outbox.open(lake) as box:
        assert [entry.state for entry in box.entries()] == ["pending"]

    published = CliRunner().invoke(app, ["alerts", "publish", "--lake", str(lake), "--endpoint-url", aws])
    assert published.exit_code == 1 and f"error: {no_topic(1)}" in " ".join(published.output.split())
    assert topic.drain(queue) == []

    # The advice works: with a topic, the pending alert goes out.
    monkeypatch.setenv("KEYTRAIL_TOPIC_ARN", topic.arn)
    sent = CliRunner().invoke(app, ["alerts", "publish", "--lake", str(lake), "--endpoint-url", aws])
    assert sent.exit_code == 0, sent.output
    assert len(topic.drain(queue)) == 1


def test_publish_pending_needs_a_topic(lake: Path, topic: Topic) -> None:
    """Without a topic the caller (queue_and_publish) decides; reaching SNS code without one is a bug."""
    enqueue(lake, spread(1), now=NOW)
    with pytest.raises(ValueError, match="topic_arn is required"):
        publish_pending(lake, topic.sns, "", now=NOW)
    with Outbox.open(lake) as box:
        assert box.counts()["pending"] == 1
