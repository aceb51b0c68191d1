"""From findings to subscribers, the one way `keytrail detect --publish`, `keytrail alerts publish` and the flows
all take: queue the alerts in the lake's outbox, then publish every pending alert to SNS.

The re-alert policy comes from the catalog the caller already loaded (the one the findings came from), and
what happens without an SNS topic is decided here, once. The edges choose only how progress shows (a rich bar,
Prefect logs) and how SNS is called (`send`: a fresh client here; a flow passes its task with retries).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import catalog
from pipeline.alerting import sns
from pipeline.alerting.alert import Alert
from pipeline.alerting.outbox import EnqueueReport, Outbox
from pipeline.catalog import Query
from pipeline.settings import Settings

OnQueued = Callable[[EnqueueReport], None]
OnProgress = Callable[[int, int], None]  # (messages sent, messages in this run)


@dataclass(frozen=True)
class SnsTarget:
    """Where and how to publish: the topic, the client's endpoint and region, the storm cap, the body format."""

    topic_arn: str
    endpoint_url: str | None
    region: str
    storm_cap: int
    fmt: str = "json"


Send = Callable[[Path, SnsTarget, dt.datetime, OnProgress | None], sns.PublishReport]


def send_to_sns(lake: Path, target: SnsTarget, now: dt.datetime, on_progress: OnProgress | None) -> sns.PublishReport:
    """Publish the lake's pending alerts with a new SNS client (the CLI's way of sending)."""
    from pipeline import aws  # boto3: only when something is published

    client = aws.client("sns", endpoint_url=target.endpoint_url, region=target.region)
    return sns.publish_pending(
        lake, client, target.topic_arn, now=now, storm_cap=target.storm_cap, fmt=target.fmt, on_progress=on_progress
    )


@dataclass(frozen=True)
class AlertingReport:
    """What `queue_and_publish` did: the outbox's enqueue report, then SNS's, or why nothing was published."""

    queued: EnqueueReport
    published: sns.PublishReport | None = None
    not_published: str | None = None  # publishing was asked for but could not start; says what to do
    notices: tuple[str, ...] = ()  # said by this run for the first time (e.g. a tuning exception expired)


def no_topic(pending: int) -> str:
    return (
        f"no SNS topic configured: {pending} alert(s) stay pending in the outbox. Set KEYTRAIL_TOPIC_ARN "
        "(or pass --topic-arn ARN), then run `keytrail alerts publish`"
    )


def queue_and_publish(
    lake: Path,
    alerts: Sequence[Alert],
    detections: Iterable[Query],
    *,
    now: dt.datetime,
    settings: Settings,
    publish: bool = True,
    topic_arn: str | None = None,
    endpoint_url: str | None = None,
    storm_cap: int | None = None,
    fmt: str = "json",
    notices: Mapping[str, str] | None = None,
    send: Send = send_to_sns,
    on_queued: OnQueued | None = None,
    on_progress: OnProgress | None = None,
) -> AlertingReport:
    """Queue `alerts` in the lake's outbox, then (when `publish`) send every pending alert to SNS.

    A repeat of an alert that paged is suppressed within its detection's `realert` interval, taken from
    `detections` (the catalog the alerts were found with), else `settings.realert_hours`. `topic_arn`,
    `endpoint_url` and `storm_cap` override the settings. Without any topic nothing is sent: the report's
    `not_published` says so and what to do, and the alerts stay pending. `on_queued(report)` runs once the
    alerts are in the outbox, `on_progress(done, total)` as SNS takes the messages. Raises
    `sns.PublishError` when SNS refuses (the alerts stay pending), and `outbox.OutboxError` when the outbox
    cannot take the alerts (damaged, read-only, disk full: nothing was queued). An alert SNS will not take is
    given up (`failed`) and listed in the report's `published.undeliverable`: it never blocks the others.
    Alerts carrying a tuning `exception` are recorded as `excepted` and never sent. `notices` (key -> message,
    e.g. the tuning exceptions that have expired) are recorded in the outbox, and the report's `notices` holds
    those no run said before: each is said once.
    """
    realert_after = catalog.realert_intervals(detections, dt.timedelta(hours=settings.realert_hours))
    with Outbox.open(lake) as box:
        queued = box.enqueue(alerts, now=now, realert_after=realert_after)
        said = tuple(box.say_once(notices, now=now)) if notices else ()
        pending = box.counts()["pending"]
    if on_queued is not None:
        on_queued(queued)
    if not publish:
        return AlertingReport(queued, notices=said)
    topic = topic_arn or settings.topic_arn
    if not topic:
        return AlertingReport(queued, not_published=no_topic(pending), notices=said)
    target = SnsTarget(
        topic_arn=topic,
        endpoint_url=endpoint_url or settings.endpoint_url,
        region=settings.region,
        storm_cap=storm_cap or settings.storm_cap,
        fmt=fmt,
    )
    return AlertingReport(queued, published=send(lake, target, now, on_progress), notices=said)
