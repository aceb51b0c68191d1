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
from pipeline import catalog, findings
from pipeline.alerting import sns
from pipeline.alerting.alert import Alert
from pipeline.alerting.publish import AlertingReport, OnProgress, SnsTarget, queue_and_publish
from pipeline.lake import lake_dir
from pipeline.settings import Settings
from pipeline.times import parse_duration, parse_timestamp
from pipeline.tuning import apply, loader
from pipeline.tuning.model import Tuning

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
def find_alerts(
    lake: str,
    since: dt.datetime,
    until: dt.datetime,
    detections: tuple[catalog.Query, ...],
    trusted_accounts: tuple[str, ...],
    tuning: Tuning,
    now: dt.datetime,
) -> list[Alert]:
    # The same findings `keytrail detect` makes: tuned detections, exceptions, names (pipeline/findings.py).
    alerts = findings.find(
        Path(lake), since, until, detections=detections, tuning=tuning, now=now, trusted_accounts=trusted_accounts
    )
    excepted = len(findings.excepted(alerts))
    get_run_logger().info(
        "%d findings in [%s, %s), %d excepted by the tuning file", len(alerts), since.isoformat(), until.isoformat(),
        excepted,
    )  # fmt: skip
    return alerts


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
    lake: Path, target: SnsTarget, now: dt.datetime, on_progress: OnProgress | None
) -> sns.PublishReport:
    """`queue_and_publish`'s SNS step as a task of its own: only this I/O is retried, never the queueing."""
    client = clients.client("sns", target.endpoint_url, target.region)
    report = sns.publish_pending(
        lake, client, target.topic_arn, now=now, storm_cap=target.storm_cap, fmt=target.fmt, on_progress=on_progress
    )
    get_run_logger().info("SNS: %s", report)
    return report


@task(name="queue-and-publish", cache_policy=NO_CACHE)
def queue_and_publish_alerts(
    lake: str,
    alerts: list[Alert],
    detections: tuple[catalog.Query, ...],
    now: dt.datetime,
    publish: bool,
    settings: Settings,
    notices: dict[str, str] | None = None,
) -> AlertingReport:
    logger = get_run_logger()
    report = queue_and_publish(
        Path(lake),
        alerts,
        detections,
        now=now,
        settings=settings,
        publish=publish,
        notices=notices,
        send=publish_alerts,
        on_queued=lambda queued: logger.info("outbox: %s", queued),
        on_progress=lambda done, total: logger.info("published %d of %d messages", done, total),
    )
    for notice in report.notices:  # said once, by the first run that saw it
        logger.warning("%s", notice)
    if report.not_published:
        logger.warning("%s", report.not_published)
    if report.published and report.published.undeliverable:
        logger.error(
            "%d alert(s) could not be delivered and are now failed (they block nothing): %s. "
            "`keytrail alerts show ID` says why; once fixed, `keytrail alerts retry ID` queues one again",
            len(report.published.undeliverable),
            "; ".join(f"{alert_id[:12]}: {why}" for alert_id, why in sorted(report.published.undeliverable.items())),
        )
    return report


def evaluate_window(
    lake: str, since: dt.datetime, until: dt.datetime, *, now: dt.datetime, publish: bool, settings: Settings
) -> dict[str, Any]:
    """detect -> queue -> publish as tasks of the calling flow; returns counts and the new alert ids.

    The catalog and the tuning file (KEYTRAIL_TUNING, else ./keytrail.yaml) are loaded once here: the tuned
    catalog picks the detections and gives the outbox its re-alert intervals, exactly as `keytrail detect
    --publish` does."""
    lake = str(lake_dir(lake, settings))  # an s3:// lake: this machine's replica of it
    shipped = catalog.load("detections")
    tuning = loader.load_for_run(None, settings, shipped)
    detections = findings.tuned_catalog(shipped, tuning)
    alerts = find_alerts(lake, since, until, detections, tuple(settings.trusted_accounts), tuning, now)
    notices = apply.expiry_notices(tuning, now)
    report = queue_and_publish_alerts(lake, alerts, detections, now, publish, settings, notices)
    sent = report.published
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "findings": len(alerts),
        "queued": list(report.queued.queued),
        "excepted": list(report.queued.excepted),  # covered by a tuning exception: recorded, not paged
        "notices": list(report.notices),  # said for the first time by this run (an exception expired)
        "suppressed": list(report.queued.suppressed),
        "known": len(report.queued.known),
        "messages": sent.messages if sent else 0,
        "sent": len(sent.sent) if sent else 0,
        "summarized": len(sent.summarized) if sent else 0,
        "failed": len(sent.failed) if sent else 0,  # attempts that failed: those alerts stay pending
        "undeliverable": sorted(sent.undeliverable) if sent else [],  # given up: now in the `failed` state
        "released": list(sent.released) if sent else [],  # suppressed by those: pending again
        "not_published": report.not_published,  # why nothing went to SNS (no topic), with what to do
    }


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
