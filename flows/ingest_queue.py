"""`ingest_queue`: drain an SQS queue of S3 event notifications into the lake (event-driven ingest).

One task drains: receiving, the visibility heartbeat and the deletes hold receipt handles that only make sense
in the process that received them, so the drain is not split into tasks. Each committed batch is logged; the
flow returns the counts. Schedule it every few minutes (each run drains the backlog and stops), and keep a
daily listing run (`ingest_cloudtrail` over the last days) as the backstop for lost notifications.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.clients import client
from flows.ingest import report_dict
from flows.logs import route_library_logs
from pipeline import queue_ingest, safe_text, sqs_queue
from pipeline.queue_report import DrainOptions, QueueReport
from pipeline.settings import Settings

# A retry drains again: everything committed before the failure is deleted from the queue or in the ledger.
_IO = {"cache_policy": NO_CACHE, "retries": 2, "retry_delay_seconds": [10, 60]}


def _log_batch(report: QueueReport) -> None:
    get_run_logger().info(
        "batch %d: %d messages received, %d deleted, %d failed; %d objects read, %d events kept so far",
        report.batches,
        report.messages_received,
        report.messages_deleted,
        report.messages_failed,
        report.ingest.objects_read,
        report.ingest.events_kept,
    )


def queue_report_dict(report: QueueReport) -> dict[str, Any]:
    """The drain's report as plain JSON-ready data (what the flow returns and Prefect stores)."""
    data = {
        name: getattr(report, name)
        for name in (
            "queue",
            "dead_letter_arn",
            "batches",
            "messages_received",
            "messages_deleted",
            "messages_failed",
            "messages_poison",
            "control_messages",
            "objects_notified",
            "objects_repeated",
            "visibility_extensions",
        )
    }
    data["shapes"] = dict(report.shapes)
    data["skipped"] = dict(report.skipped)
    data["poison"] = [dataclasses.asdict(failure) for failure in report.poison]
    data["ingest"] = report_dict(report.ingest, 0)
    return data


@task(name="drain-queue", task_run_name="drain {queue}", **_IO)
def drain_queue(queue: str, lake: str, options: DrainOptions, workers: int) -> dict[str, Any]:
    settings = Settings.from_env()
    ref = sqs_queue.parse_queue_ref(queue)
    sqs = client("sqs", settings.endpoint_url, ref.region or settings.region)
    resolved = sqs_queue.open_queue(sqs, ref)
    logger = get_run_logger()
    if resolved.dead_letter_arn is None:
        logger.warning("%s has no redrive policy: messages that keep failing stay on it", resolved.url)
    report = queue_ingest.drain(
        resolved,
        lake,
        sqs_client=sqs,
        s3_client=client("s3", settings.endpoint_url, settings.region),
        clock=lambda: dt.datetime.now(dt.UTC),
        options=options,
        event_sources=settings.event_sources,
        workers=workers,
        on_batch=_log_batch,
    )
    for failure in report.poison:
        logger.error(
            "message %s failed %d receives: %s",
            failure.message_id,
            failure.receive_count,
            safe_text.visible(failure.reason),
        )
    return queue_report_dict(report)


@flow(name="ingest-queue", log_prints=False)
def ingest_queue(
    queue: str,
    lake: str | None = None,
    max_messages: int | None = None,
    batch_messages: int = DrainOptions.batch_messages,
    wait_seconds: int = DrainOptions.wait_seconds,
    visibility_seconds: int = DrainOptions.visibility_seconds,
    retry_delay_seconds: int = DrainOptions.retry_delay_seconds,
    max_receives: int = DrainOptions.max_receives,
    workers: int = 1,
) -> dict[str, Any]:
    """Drain `queue` (sqs://QUEUE-URL, a URL or a queue name) into the lake until it is empty (or
    `max_messages` were received); returns the drain's counts."""
    route_library_logs()
    settings = Settings.from_env()
    options = DrainOptions(
        batch_messages=batch_messages,
        wait_seconds=wait_seconds,
        visibility_seconds=visibility_seconds,
        retry_delay_seconds=retry_delay_seconds,
        max_receives=max_receives,
        max_messages=max_messages,
    )
    options.check()  # a bad parameter fails the flow at once, not after retries
    result = drain_queue(queue, str(lake or settings.lake), options, workers)
    get_run_logger().info(
        "drained %s: %d messages deleted, %d failed; %d events kept",
        safe_text.visible(queue),
        result["messages_deleted"],
        result["messages_failed"],
        result["ingest"]["events_kept"],
    )
    return result
