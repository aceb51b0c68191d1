"""Detection quality on data nobody tuned by hand.

1. A simulated multi-day organization trail with every injected incident and the benign look-alikes is
   ingested and evaluated hour by hour over the incident day, as the scheduled job would: every incident is
   found by its detection with the right principal and time, and nothing else fires.
2. The real public corpus (../shared/realdata): the Stratus Red Team secret-retrieval detonations are found
   by secrets_enumeration with the principal and time of facts.json, and the Secrets Manager detections
   stay quiet on the rest of the real traffic (e.g. Stratus' own teardown force-deleting its 20 secrets).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pytest

from pipeline.alerts import Alert
from pipeline.detect import run_detections
from pipeline.ingest import ingest
from pipeline.lake import committed_files

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
SECRETS_DETECTIONS = (
    "secrets_deletion",
    "secrets_enumeration",
    "secrets_policy_exposure",
    "secrets_retrieval_spike",
    "secrets_rotation_failure",
)
RETRIEVAL_TECHNIQUES = (
    "aws.credential-access.secretsmanager-retrieve-secrets",
    "aws.credential-access.secretsmanager-batch-retrieve-secrets",
)


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _hours(since: dt.datetime, until: dt.datetime) -> Iterable[tuple[dt.datetime, dt.datetime]]:
    """The hourly windows a scheduled run evaluates over [since, until)."""
    start = since.replace(minute=0, second=0, microsecond=0)
    while start < until:
        yield start, start + HOUR
        start += HOUR


def evaluate_hourly(
    lake: Path, since: dt.datetime, until: dt.datetime, detection_ids: Iterable[str] | None = None
) -> list[Alert]:
    """Run the detections window by window; an alert re-found by a later window keeps its id (like the outbox)."""
    ids = list(detection_ids) if detection_ids is not None else None
    found: dict[str, Alert] = {}
    for start, end in _hours(since, until):
        for alert in run_detections(lake, start, end, detection_ids=ids):
            found.setdefault(alert.alert_id, alert)
    return sorted(found.values(), key=lambda a: (a.first_seen, a.detection_id))


def _overlaps(alert: Alert, start: dt.datetime, end: dt.datetime) -> bool:
    return alert.first_seen <= end and alert.last_seen >= start


def _describe(alerts: Iterable[Alert]) -> str:
    return "\n".join(
        f"  {a.detection_id} [{a.severity}] {a.principal_arn} {a.resource_arn} "
        f"{a.first_seen:%Y-%m-%dT%H:%M:%S}..{a.last_seen:%H:%M:%S} n={a.event_count}"
        for a in alerts
    )


# --- 2. the real corpus ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_lake(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("real") / "lake"
    lake.mkdir()
    report = ingest(str(realdata / "corpus"), lake)
    assert report.events_kept > 0
    return lake


@pytest.fixture(scope="module")
def retrieval_windows(realdata: Path) -> list[dict[str, object]]:
    facts = json.loads((realdata / "facts.json").read_text())
    windows = [
        w
        for w in facts["attack_windows"]
        if w["technique"] in RETRIEVAL_TECHNIQUES and w["source"] in ("stratus-detonation-logs", "invictus-aws-dataset")
    ]
    # Both Stratus techniques must be present, or the test below proves nothing.
    assert {w["technique"] for w in windows if w["source"] == "stratus-detonation-logs"} == set(RETRIEVAL_TECHNIQUES)
    return windows


def test_stratus_secret_retrieval_detonations_are_found(real_lake: Path, retrieval_windows: list[dict]) -> None:
    for window in retrieval_windows:
        start, end = _time(window["start"]), _time(window["end"])
        alerts = evaluate_hourly(real_lake, start, end + HOUR, ["secrets_enumeration"])
        hits = [a for a in alerts if a.principal_arn in window["principals"] and _overlaps(a, start, end)]
        assert len(hits) == 1, f"{window['source']} {window['technique']} {start}..{end}:\n{_describe(alerts)}"
        hit = hits[0]
        # The finding lies inside the labelled window and names the account the detonation ran in.
        assert start <= hit.first_seen <= hit.last_seen <= end
        assert hit.account_id in window["recipient_accounts"]
        assert hit.severity == "high" and "T1555.006" in hit.attack


def test_secrets_detections_on_real_traffic_find_only_the_attacks(real_lake: Path) -> None:
    alerts: dict[str, Alert] = {}
    for start in _hours_with_secrets_events(real_lake):
        # that hour, and the next one (a finding must not be re-reported with a new id)
        for alert in evaluate_hourly(real_lake, start, start + 2 * HOUR, SECRETS_DETECTIONS):
            alerts.setdefault(alert.alert_id, alert)
    found = sorted((a.detection_id, a.principal_arn or "", a.resource_arn or "") for a in alerts.values())
    assert found == [
        # the three labelled retrieval detonations (Stratus x2, the Stratus run inside Invictus' trail)
        ("secrets_enumeration", "arn:aws:iam::123837392027:user/bert-jan", ""),
        ("secrets_enumeration", "arn:aws:iam::165109126369:user/christophe", ""),
        ("secrets_enumeration", "arn:aws:iam::903144391865:user/christophe", ""),
        # the AWS documentation's RotationFailed example: a real failed rotation, no caller identity
        (
            "secrets_rotation_failure",
            "",
            "arn:aws:secretsmanager:us-east-2:123456789012:secret:MyDatabaseSecret-a1b2c3",
        ),
    ], _describe(alerts.values())


def _hours_with_secrets_events(lake: Path) -> list[dt.datetime]:
    """Hours holding Secrets Manager events (the corpus spans ten years; almost every hour is empty)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            "SELECT DISTINCT time_bucket(INTERVAL 1 HOUR, event_time) FROM read_parquet($files) "
            "WHERE event_source = 'secretsmanager.amazonaws.com' ORDER BY 1",
            {"files": [str(p) for p in committed_files(lake)]},
        ).fetchall()
    finally:
        con.close()
    return [row[0].astimezone(UTC) for row in rows]
