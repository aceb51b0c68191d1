"""`detect_and_alert`: run the detections over the trailing horizon, queue new alerts, publish pending ones.

Each run re-evaluates the whole horizon (default 2 h), not just the minutes since the last run: CloudTrail
delivers most files 5-15 min late and some 45+ min late, so a finding whose events arrive late appears on a
later run. Deterministic alert ids (detection + dedup values + window bucket) and the outbox make the overlap
harmless: an alert already queued is "known" and never sent again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from flows import clients
from flows.logs import route_library_logs
from pipeline import detect
from pipeline.alerting import outbox, sns
from pipeline.alerting.alert import Alert
from pipeline.settings import Settings
from pipeline.times import parse_duration, parse_timestamp

DEFAULT_HORIZON = "2h"


def resolve_now(now: dt.datetime | None) -> dt.datetime:
    """The evaluation time: the given one, else the flow run's scheduled start (a rerun of a scheduled run
    evaluates the same window), else the clock. Only flows call this: nothing below them reads the clock."""
    if now is not None:
        return parse_timestamp(now)
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return parse_timestamp(scheduled) if isinstance(scheduled, dt.datetime) else dt.datetime.now(dt.UTC)


@task(name="run-detections", cache_policy=NO_CACHE)
def find_alerts(lake: str, since: dt.datetime, until: dt.datetime, trusted_accounts: tuple[str, ...]) -> list[Alert]:
    alerts = detect.run_detections(Path(lake), since, until, trusted_accounts=trusted_accounts)
    get_run_logger().info("%d findings in [%s, %s)", len(alerts), since.isoformat(), until.isoformat())
    return alerts


@task(name="enqueue-alerts", cache_policy=NO_CACHE)
def enqueue_alerts(lake: str, alerts: list[Alert], now: dt.datetime, realert_hours: float) -> outbox.EnqueueReport:
    realert_after = detect.realert_policy(dt.timedelta(hours=realert_hours))
    report = outbox.enqueue(Path(lake), alerts, now=now, realert_after=realert_after)
    get_run_logger().info("outbox: %s", report)
    return report


def _retry_unless_refused(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    # A missing topic or denied access will not fix itself in seconds: fail at once, alerts stay pending.
    return not isinstance(state.result(raise_on_failure=False), sns.PublishError)


@task(
    name="publish-alerts",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[5, 30, 120],
    retry_condition_fn=_retry_unless_refused,
)
def publish_alerts(
    lake: str, topic_arn: str, endpoint_url: str | None, region: str | None, now: dt.datetime, storm_cap: int
) -> sns.PublishReport:
    client = clients.client("sns", endpoint_url, region)
    report = sns.publish_pending(Path(lake), client, topic_arn, now=now, storm_cap=storm_cap)
    get_run_logger().info("SNS: %s", report)
    return report


def evaluate_window(
    lake: str, since: dt.datetime, until: dt.datetime, *, now: dt.datetime, publish: bool, settings: Settings
) -> dict[str, Any]:
    """detect -> enqueue -> publish as tasks of the calling flow; returns counts and the new alert ids."""
    alerts = find_alerts(lake, since, until, tuple(settings.trusted_accounts))
    queued = enqueue_alerts(lake, alerts, now, settings.realert_hours)
    result: dict[str, Any] = {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "findings": len(alerts),
        "queued": list(queued.queued),
        "suppressed": list(queued.suppressed),
        "known": len(queued.known),
        "messages": 0,
        "sent": 0,
        "summarized": 0,
        "failed": 0,
    }
    if publish and not settings.topic_arn:
        get_run_logger().warning("no SNS topic (KEYTRAIL_TOPIC_ARN): alerts stay pending in the outbox")
    elif publish:
        report = publish_alerts(
            lake, settings.topic_arn, settings.endpoint_url, settings.region, now, settings.storm_cap
        )
        result.update(
            messages=report.messages,
            sent=len(report.sent),
            summarized=len(report.summarized),
            failed=len(report.failed),
        )
    return result


@flow(name="detect-and-alert")
def detect_and_alert(
    lake: str | None = None, horizon: str = DEFAULT_HORIZON, publish: bool = True, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Detections over [now - horizon, now); new alerts into the outbox; pending alerts to SNS when `publish`."""
    route_library_logs()
    settings = Settings.from_env()
    until = resolve_now(now)
    return evaluate_window(
        str(lake or settings.lake),
        until - parse_duration(horizon),
        until,
        now=until,
        publish=publish,
        settings=settings,
    )
