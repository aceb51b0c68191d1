"""A small simulated lake with alerts in its outbox, for the analyst tests (CLI examples, notebooks, report),
and a test Alert maker.

Built once per test session (per xdist worker): `simulate` 8 days with every incident on the last day ->
`ingest` -> `run_detections` over the last day -> `outbox.enqueue`. About 6k KMS/Secrets Manager events, a few s.
"""

from __future__ import annotations

import datetime as dt
import fcntl
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import detect
from pipeline.alerting import outbox
from pipeline.alerting.alert import Alert
from pipeline.ingest import ingest
from pipeline.simulate import simulate

START = dt.date(2024, 5, 1)
DAYS = 8
SEED = 7
EVENTS_PER_DAY = 2000
LAST_DAY = dt.datetime(2024, 5, 8, tzinfo=dt.UTC)  # the incidents' day
END = LAST_DAY + dt.timedelta(days=1)


@dataclass(frozen=True)
class AnalystLake:
    path: Path
    alert_ids: tuple[str, ...]


def build(root: Path) -> AnalystLake:
    """Build the lake under `root` unless a previous test module of this session already did."""
    root.mkdir(parents=True, exist_ok=True)
    lake_path = root / "lake"
    done = root / "built"
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            simulate(str(root / "trail"), days=DAYS, seed=SEED, start=START, events_per_day=EVENTS_PER_DAY)
            report = ingest(str(root / "trail"), lake_path)
            assert report.events_kept > 1000 and not report.quarantine
            alerts = detect.run_detections(lake_path, LAST_DAY, END)
            assert alerts, "the simulated incidents should raise alerts"
            outbox.enqueue(lake_path, alerts, now=END)
            done.write_text("\n".join(a.alert_id for a in alerts))
    return AnalystLake(lake_path, tuple(done.read_text().split()))


def analyst_lake_fixture(tmp_path_factory: pytest.TempPathFactory) -> AnalystLake:
    """Body of the session fixture each analyst test module declares (the build is shared through the disk)."""
    return build(tmp_path_factory.getbasetemp() / "analyst-lake")


def make_alert(**overrides: object) -> Alert:
    """A decrypt-spike alert on a role and a key; override any field."""
    first = dt.datetime(2024, 5, 8, 2, tzinfo=dt.UTC)
    values: dict[str, object] = {
        "alert_id": "a" * 32,
        "detection_id": "kms_decrypt_volume_spike",
        "title": "KMS decrypt volume spike",
        "severity": "high",
        "account_id": "111122223333",
        "region": "us-east-1",
        "principal_arn": "arn:aws:iam::111122223333:role/etl",
        "resource_arn": "arn:aws:kms:us-east-1:111122223333:key/k1",
        "first_seen": first,
        "last_seen": first + dt.timedelta(hours=1),
        "event_count": 2000,
        "runbook": "Check the job.",
    }
    return Alert(**{**values, **overrides})  # type: ignore[arg-type]
