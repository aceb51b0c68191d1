"""The lake keeps CloudTrail's own management events, and the trail-blinding detections run on real ones."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from pipeline import events, ingest
from pipeline.analysis import open_window, totals
from pipeline.detect import run_detections
from pipeline.engine import Engine

INVICTUS = "invictus-aws-dataset"
SINCE = dt.datetime(2023, 7, 10, 11, tzinfo=dt.UTC)
UNTIL = dt.datetime(2023, 7, 10, 13, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def invictus_lake(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("blinding") / "lake"
    report = ingest.ingest(str(realdata / "corpus" / INVICTUS), lake)  # the default sources
    assert report.objects_quarantined == 0 and report.events_rejected == 0
    return lake


def test_cloudtrail_management_events_are_kept_by_default(invictus_lake: Path) -> None:
    assert events.CLOUDTRAIL_SOURCE in events.DEFAULT_SOURCES
    with Engine.for_lake(invictus_lake, SINCE, UNTIL) as engine:
        rows = engine.sql("SELECT event_source, event_name FROM events").to_pylist()
    kept = Counter(row["event_name"] for row in rows if row["event_source"] == events.CLOUDTRAIL_SOURCE)
    # The real trail's CloudTrail calls (Stratus Red Team's trail techniques), all of them.
    assert kept == {"DescribeTrails": 7, "StartLogging": 5, "GetEventSelectors": 4, "ListTags": 4,
                    "GetTrailStatus": 3, "StopLogging": 3, "DeleteTrail": 3, "LookupEvents": 2, "CreateTrail": 2,
                    "PutEventSelectors": 2}  # fmt: skip


def test_activity_summaries_count_kms_and_secrets_manager_only(invictus_lake: Path) -> None:
    with open_window(invictus_lake, SINCE, UNTIL) as engine:
        counted = totals(engine)["events"]
        sources = engine.sql("SELECT event_source FROM events").column("event_source").to_pylist()
        audited = sum(source in (events.KMS_SOURCE, events.SECRETS_SOURCE) for source in sources)
    assert counted == audited == 240 + 233


def test_the_real_trail_tampering_fires_and_the_failed_stop_logging_stays_quiet(invictus_lake: Path) -> None:
    found = run_detections(invictus_lake, SINCE, UNTIL, detection_ids=["trail_logging_tampered"])
    changes = sorted((a.context["trail"], tuple(a.context["changes"])) for a in found)
    # Stratus' "cloudtrail-event-selectors" turned management events off, then Terraform deleted that trail and
    # another one. The three StopLogging calls all failed (TrailNotFoundException): nothing fires for them.
    assert changes == [
        ("stratus-red-team-ctes-trail-qyxyekjbtk", ("management events turned off", "trail deleted")),
        ("stratus-red-team-ctlr-trail-zqfsvooxqj", ("trail deleted",)),
    ]
    assert {a.severity for a in found} == {"critical"}
    assert all(a.account_id == "123837392027" and a.region == "us-east-1" for a in found)
