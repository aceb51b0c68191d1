"""The `ingest-queue` flow, run for real under a Prefect test harness against moto's S3 -> EventBridge -> SQS."""

from __future__ import annotations

from pathlib import Path

import pytest
from queue_trail import QueueTrail
from trails import day_of, lake_table

pytest_plugins = ["prefect_fixtures"]
pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.usefixtures("prefect_harness")]


def test_ingest_queue_flow_drains_the_notifications_into_the_lake(
    aws: str, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest_queue import ingest_queue

    monkeypatch.setenv("KEYTRAIL_ENDPOINT_URL", aws)
    trail = QueueTrail(aws, max_receive_count=3)
    trail.wire("eventbridge")
    wanted = trail.put_log(day_of(0), "a") + trail.put_log(day_of(1), "b")
    trail.send("not a notification")

    result = ingest_queue(trail.url, str(lake), wait_seconds=0, retry_delay_seconds=0)

    assert sorted(lake_table(lake).column("event_id").to_pylist()) == sorted(wanted)
    assert result["ingest"]["events_kept"] == 4 and result["shapes"]["eventbridge"] >= 2
    assert result["messages_failed"] == 3 and result["dead_letter_arn"].endswith("trail-events-dlq")
    assert trail.waiting() == 0 and trail.waiting(trail.dead_letter_url) == 1
    # The next scheduled run finds an empty queue and does nothing.
    again = ingest_queue(trail.url, str(lake), wait_seconds=0)
    assert (again["messages_received"], again["ingest"]["events_kept"]) == (0, 0)
