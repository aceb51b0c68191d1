"""`queue_and_publish`: the one way from findings to subscribers (CLI and flows), with the catalog's re-alert
policy and one answer to "no SNS topic"."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from pipeline import catalog
from pipeline.alerting.alert import Alert
from pipeline.alerting.outbox import Outbox
from pipeline.alerting.publish import SnsTarget, no_topic, queue_and_publish
from pipeline.alerting.sns import PublishReport
from pipeline.settings import Settings
from tests.test_alerts import T0, make_alert
from tests.test_sns import Topic, alert_ids

NOW = T0 + dt.timedelta(hours=3)
SPIKE = "kms_decrypt_volume_spike"


def two_spikes_two_hours_apart() -> list[Alert]:
    """The same principal on the same key at 10:00 and 12:00: two alert ids, one dedup key."""
    return [make_alert(first_seen=T0), make_alert(first_seen=T0 + dt.timedelta(hours=2))]


def states(lake: Path) -> list[str]:
    with Outbox.open(lake) as box:
        return [entry.state for entry in sorted(box.entries(), key=lambda e: e.alert.first_seen)]


def never_sent(lake: Path, target: SnsTarget, now: dt.datetime, on_progress: object) -> PublishReport:
    raise AssertionError("nothing should be sent")


def test_realert_intervals_come_from_the_catalog_given(tmp_path: Path) -> None:
    detections = catalog.load("detections")
    assert next(q for q in detections if q.id == SPIKE).realert is None  # the 6 h setting applies
    hourly = tuple(dataclasses.replace(q, realert=dt.timedelta(hours=1)) if q.id == SPIKE else q for q in detections)
    settings = Settings(realert_hours=6.0)
    alerts = two_spikes_two_hours_apart()

    for lake, given, expected in ((tmp_path / "a", detections, ["pending", "suppressed"]),
                                  (tmp_path / "b", hourly, ["pending", "pending"])):  # fmt: skip
        report = queue_and_publish(lake, alerts, given, now=NOW, settings=settings, publish=False, send=never_sent)
        assert states(lake) == expected
        pending = expected.count("pending")
        assert (len(report.queued.queued), len(report.queued.suppressed)) == (pending, 2 - pending)
        assert report.published is None and report.not_published is None  # not asked to publish: nothing to say


def test_without_a_topic_alerts_are_queued_and_the_report_says_what_to_do(lake: Path) -> None:
    queued: list[object] = []
    report = queue_and_publish(
        lake,
        [make_alert(), make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")],
        catalog.load("detections"),
        now=NOW,
        settings=Settings(topic_arn=None),
        send=never_sent,
        on_queued=queued.append,
    )
    assert queued == [report.queued] and len(report.queued.queued) == 2
    assert report.published is None
    assert report.not_published == no_topic(2)
    assert "no SNS topic" in report.not_published and "2 alert(s) stay pending" in report.not_published
    assert "KEYTRAIL_TOPIC_ARN" in report.not_published and "keytrail alerts publish" in report.not_published
    assert states(lake) == ["pending", "pending"]


def test_explicit_topic_endpoint_and_storm_cap_override_the_settings(lake: Path) -> None:
    steps: list[object] = []

    def send(lake_path: Path, target: SnsTarget, now: dt.datetime, on_progress: object) -> PublishReport:
        steps.append(target)
        return PublishReport(sent=("x",), calls=1)

    from_env = "arn:aws:sns:us-east-1:111122223333:from-env"
    settings = Settings(topic_arn=from_env, endpoint_url="http://env", storm_cap=40)
    report = queue_and_publish(
        lake, [make_alert()], (), now=NOW, settings=settings, send=send, on_queued=lambda queued: steps.append("queued")
    )
    assert steps == ["queued", SnsTarget(from_env, "http://env", "us-east-1", 40, "json")]
    assert report.published == PublishReport(sent=("x",), calls=1) and report.not_published is None

    steps.clear()
    queue_and_publish(
        lake,
        [],
        (),
        now=NOW,
        settings=settings,
        topic_arn="arn:aws:sns:us-east-1:111122223333:given",
        endpoint_url="http://given",
        storm_cap=3,
        fmt="ocsf",
        send=send,
    )
    assert steps == [SnsTarget("arn:aws:sns:us-east-1:111122223333:given", "http://given", "us-east-1", 3, "ocsf")]


def test_publishes_pending_alerts_to_sns(lake: Path, aws: str) -> None:
    topic = Topic(aws)
    queue = topic.subscribe("all")
    alerts = [make_alert(), make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")]
    progress: list[tuple[int, int]] = []
    report = queue_and_publish(
        lake,
        alerts,
        catalog.load("detections"),
        now=NOW,
        settings=Settings(topic_arn=topic.arn, endpoint_url=aws),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert report.published is not None and report.published.messages == 2
    assert progress == [(2, 2)]
    assert sorted(alert_ids(topic.drain(queue))) == sorted(a.alert_id for a in alerts)
    assert states(lake) == ["sent", "sent"]
