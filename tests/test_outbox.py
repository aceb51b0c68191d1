"""The alert outbox in the lake: idempotent enqueue, re-alert suppression, state changes, history, the lock."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from pathlib import Path

import pytest

from pipeline.alerting.outbox import (
    DEFAULT_KEY,
    Delivery,
    Outbox,
    OutboxError,
    enqueue,
    outbox_path,
    realert_interval,
)
from tests.test_alerts import T0, make_alert

NOW = T0 + dt.timedelta(hours=2)
HOUR = dt.timedelta(hours=1)


def states(lake: Path) -> dict[str, str]:
    with Outbox.open(lake) as box:
        return {entry.alert.alert_id: entry.state for entry in box.entries()}


def hourly(count: int, **overrides: object) -> list:
    return [make_alert(first_seen=T0 + i * HOUR, **overrides) for i in range(count)]


def test_enqueue_creates_a_wal_sqlite_outbox_in_the_lake(lake: Path) -> None:
    alerts = [make_alert(), make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")]
    report = enqueue(lake, alerts, now=NOW)
    assert sorted(report.queued) == sorted(a.alert_id for a in alerts) and not report.suppressed
    path = outbox_path(lake)
    assert path == lake / "alerts" / "outbox.sqlite"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Outbox.open(lake) as box:
        entry = box.find(alerts[0].alert_id)
        assert entry.state == "pending" and entry.enqueued_at == NOW and entry.attempts == 0
        assert entry.alert == alerts[0] and entry.alert.dedup_key == alerts[0].effective_dedup_key()
        assert [event.event for event in box.history(alerts[0].alert_id)] == ["queued"]


def test_rerun_over_an_overlapping_range_adds_nothing(lake: Path) -> None:
    first = enqueue(lake, hourly(3), now=NOW, realert_after=dt.timedelta(0))
    again = enqueue(lake, hourly(4), now=NOW + HOUR, realert_after=dt.timedelta(0))
    assert len(first.queued) == 3
    assert sorted(again.known) == sorted(first.queued) and len(again.queued) == 1
    with Outbox.open(lake) as box:
        assert box.counts() == {"pending": 4, "sent": 0, "suppressed": 0, "failed": 0, "excepted": 0}
        assert all(len(box.history(alert_id)) == 1 for alert_id in first.queued)


def test_same_key_does_not_page_again_within_the_realert_interval(lake: Path) -> None:
    # A spike that lasts 14 hours: one alert per hourly bucket, same principal and key.
    alerts = hourly(14)
    report = enqueue(lake, alerts, now=NOW, realert_after=6 * HOUR)
    paged = [a.alert_id for a in alerts if a.alert_id in report.queued]
    # measured from the last alert that paged (suppressed ones do not restart the clock)
    assert paged == [alerts[0].alert_id, alerts[6].alert_id, alerts[12].alert_id]
    assert len(report.suppressed) == 11
    with Outbox.open(lake) as box:
        assert box.find(alerts[3].alert_id).suppressed_by == alerts[0].alert_id
        assert box.find(alerts[8].alert_id).suppressed_by == alerts[6].alert_id
        assert box.history(alerts[3].alert_id)[0].event == "suppressed"


def test_suppression_spans_runs_and_ignores_other_keys(lake: Path) -> None:
    enqueue(lake, [make_alert()], now=NOW)
    later = make_alert(first_seen=T0 + 2 * HOUR)
    other_principal = make_alert(first_seen=T0 + 2 * HOUR, principal_arn="arn:aws:iam::111122223333:user/bob")
    other_detection = make_alert(first_seen=T0 + 2 * HOUR, detection_id="secrets_retrieval_spike")
    report = enqueue(lake, [later, other_principal, other_detection], now=NOW + 2 * HOUR)
    assert report.suppressed == (later.alert_id,)
    assert set(report.queued) == {other_principal.alert_id, other_detection.alert_id}


def test_a_late_earlier_alert_is_suppressed_by_the_one_that_paged(lake: Path) -> None:
    enqueue(lake, [make_alert(first_seen=T0 + 3 * HOUR)], now=NOW)
    report = enqueue(lake, [make_alert(first_seen=T0 + HOUR)], now=NOW + HOUR)
    assert len(report.suppressed) == 1


def test_rising_severity_pages_again_falling_does_not(lake: Path) -> None:
    medium = make_alert(severity="medium")
    critical = make_alert(severity="critical", first_seen=T0 + HOUR)
    high = make_alert(severity="high", first_seen=T0 + 2 * HOUR)
    report = enqueue(lake, [medium, critical, high], now=NOW)
    assert report.queued == (medium.alert_id, critical.alert_id)
    assert report.suppressed == (high.alert_id,)


def test_realert_interval_per_detection(lake: Path) -> None:
    per_detection = {"kms_decrypt_volume_spike": HOUR, DEFAULT_KEY: 12 * HOUR}
    assert realert_interval(per_detection, "kms_decrypt_volume_spike") == HOUR
    assert realert_interval(per_detection, "secrets_deletion") == 12 * HOUR
    assert realert_interval({}, "x") == 6 * HOUR
    spikes = hourly(4)
    deletions = hourly(4, detection_id="secrets_deletion")
    report = enqueue(lake, spikes + deletions, now=NOW, realert_after=per_detection)
    assert set(report.queued) == {a.alert_id for a in spikes} | {deletions[0].alert_id}


def test_zero_interval_never_suppresses(lake: Path) -> None:
    report = enqueue(lake, hourly(5), now=NOW, realert_after=dt.timedelta(0))
    assert len(report.queued) == 5


def test_sent_and_failed_are_recorded_with_history(lake: Path) -> None:
    a, b, c = hourly(3)
    enqueue(lake, [a, b, c], now=NOW, realert_after=dt.timedelta(0))
    sent_at = NOW + dt.timedelta(minutes=1)
    with Outbox.open(lake) as box:
        box.record_failures({a.alert_id: "InternalError: try later"}, now=NOW)
        box.mark_sent({a.alert_id: Delivery("mid-a"), b.alert_id: Delivery("mid-s", "summary1")}, now=sent_at)
        assert [e.alert.alert_id for e in box.pending()] == [c.alert_id]
        sent_a, sent_b = box.find(a.alert_id), box.find(b.alert_id)
        assert (sent_a.state, sent_a.message_id, sent_a.delivery, sent_a.attempts) == ("sent", "mid-a", "message", 2)
        assert sent_a.sent_at == sent_at and sent_a.last_error is None
        assert (sent_b.delivery, sent_b.summary_id, sent_b.message_id) == ("summary", "summary1", "mid-s")
        assert [(h.event, h.detail) for h in box.history(a.alert_id)] == [
            ("queued", None),
            ("failed", "InternalError: try later"),
            ("sent", "MessageId mid-a"),
        ]
        # a second record for an already-sent alert changes nothing
        box.mark_sent({a.alert_id: Delivery("mid-other")}, now=sent_at)
        assert box.find(a.alert_id).message_id == "mid-a"
        assert box.counts() == {"pending": 1, "sent": 2, "suppressed": 0, "failed": 0, "excepted": 0}
        assert [e.alert.alert_id for e in box.entries("sent")] == [a.alert_id, b.alert_id]
        with pytest.raises(OutboxError, match="unknown state"):
            box.entries("lost")


def test_find_by_prefix(lake: Path) -> None:
    alerts = hourly(40, severity="low")
    enqueue(lake, alerts, now=NOW, realert_after=dt.timedelta(0))
    target = alerts[7].alert_id
    with Outbox.open(lake) as box:
        assert box.find(target[:12]).alert.alert_id == target
        assert box.find(target.upper()).alert.alert_id == target
        with pytest.raises(OutboxError, match="no alert"):
            box.find("zz")
        with pytest.raises(OutboxError, match="no alert"):
            box.find("")
        with pytest.raises(OutboxError, match="several"):
            box.find(_shared_prefix(alerts))


def _shared_prefix(alerts: list) -> str:
    ids = sorted(a.alert_id for a in alerts)
    for first, second in itertools.pairwise(ids):
        if first[0] == second[0]:
            return first[0]
    raise AssertionError("40 random hex ids always share a first character")


def test_missing_outbox_is_a_clear_error_without_creating_one(lake: Path) -> None:
    with pytest.raises(OutboxError, match="keytrail detect"):
        Outbox.open(lake / "nowhere", create=False)
    assert not (lake / "nowhere").exists()


def test_only_one_publisher_at_a_time(lake: Path) -> None:
    enqueue(lake, [make_alert()], now=NOW)
    with (
        Outbox.open(lake) as first,
        Outbox.open(lake) as second,
        first.publishing(),
        pytest.raises(OutboxError, match="another publisher"),
        second.publishing(),
    ):
        pass
    with Outbox.open(lake) as box, box.publishing():  # released when the holder is done
        assert len(box.pending()) == 1
