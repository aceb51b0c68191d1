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

from pipeline.alerting.alert import Alert
from pipeline.detect import run_detections
from pipeline.ingest import ingest
from pipeline.lake import committed_files
from pipeline.simulate import ALL_INCIDENTS, InjectedIncident, SimulationResult, simulate

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
# 8 days: the incident day has a full 7-day lookback. ~2k events/day keeps ingest + 24 runs well under a minute.
SIM_DAYS = 8
SIM_SEED = 7
SIM_START = dt.date(2024, 5, 1)
SIM_EVENTS_PER_DAY = 2_000
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


def _caller(arn: str) -> tuple[str, str, str | None]:
    """(account, role or user name, session name or None) of a caller ARN."""
    account, resource = arn.split(":")[4], arn.split(":", 5)[5]
    if resource.startswith("assumed-role/"):
        _, role, session = resource.split("/", 2)
        return account, role, session
    return account, resource.rsplit("/", 1)[1], None


def _same_caller(a: str | None, b: str | None) -> bool:
    """A session ARN and the role ARN behind it are the same caller; two sessions must also agree on the session.

    Detections report a workload role by its role ARN (session names change every run) and a person signed in
    through IAM Identity Center by the session ARN; incidents record the session ARN.
    """
    if a is None or b is None:
        return a is b
    (account_a, name_a, session_a), (account_b, name_b, session_b) = _caller(a), _caller(b)
    same_session = session_a is None or session_b is None or session_a == session_b
    return account_a == account_b and name_a == name_b and same_session


def _explains(incident: InjectedIncident, alert: Alert) -> bool:
    """The alert is about this incident: same caller (for service events: same resource) and overlapping time."""
    if not _overlaps(alert, incident.start, incident.end):
        return False
    if incident.principal_arn is None:
        return alert.principal_arn is None and alert.resource_arn == incident.resource_arn
    return _same_caller(alert.principal_arn, incident.principal_arn)


# --- 1. a simulated trail with every incident ------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulationResult, list[Alert]]:
    root = tmp_path_factory.mktemp("sim")
    result = simulate(
        str(root / "trail"), days=SIM_DAYS, seed=SIM_SEED, start=SIM_START, events_per_day=SIM_EVENTS_PER_DAY
    )
    lake = root / "lake"
    lake.mkdir()
    ingest(str(root / "trail"), lake)
    # the incident day, hour by hour, as the scheduled job evaluates it
    day = dt.datetime.combine(SIM_START + dt.timedelta(days=SIM_DAYS - 1), dt.time(), UTC)
    return result, evaluate_hourly(lake, day, day + dt.timedelta(days=1))


def test_every_incident_is_found_by_its_detection(simulated: tuple[SimulationResult, list[Alert]]) -> None:
    result, alerts = simulated
    assert sorted(i.name for i in result.incidents) == sorted(ALL_INCIDENTS)
    missed = [
        f"{i.name} -> {i.detection_id} ({i.principal_arn or i.resource_arn}, {i.start:%H:%M:%S}..{i.end:%H:%M:%S})"
        for i in result.incidents
        if not any(a.detection_id == i.detection_id and _explains(i, a) for a in alerts)
    ]
    assert not missed, "missed incidents:\n  " + "\n  ".join(missed) + "\nalerts:\n" + _describe(alerts)


def test_nothing_fires_but_the_incidents(simulated: tuple[SimulationResult, list[Alert]]) -> None:
    """Zero false positives over the evaluated day, and each incident pages through its own detection only
    (no second alert from another detection for the same caller and minutes: one incident, one page)."""
    result, alerts = simulated
    unexplained = [
        a for a in alerts if not any(_explains(i, a) and a.detection_id == i.detection_id for i in result.incidents)
    ]
    assert not unexplained, "false positives:\n" + _describe(unexplained)


def test_lookalikes_stay_quiet(simulated: tuple[SimulationResult, list[Alert]]) -> None:
    result, alerts = simulated
    assert {b.name for b in result.benign} >= {"nightly_batch", "deploy_pipeline", "secret_rotation"}
    for benign in result.benign:
        hits = [
            a
            for a in alerts
            if not any(_explains(i, a) for i in result.incidents)
            and (
                _same_caller(a.principal_arn, benign.principal_arn)
                if benign.principal_arn
                else a.resource_arn == benign.resource_arn
            )
        ]
        assert not hits, f"look-alike {benign.name} ({benign.description}) fired:\n{_describe(hits)}"


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
