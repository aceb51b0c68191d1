"""Notification-driven ingest: does a drain's memory stay flat whatever the queue's backlog?

A moto server (S3 + SQS, in this process) holds a trail bucket wired to a queue (S3 -> SQS notifications on
PutObject). For each backlog size, the bucket gets that many log objects (one notification each) and a fresh
lake; a child process then drains the queue (`pipeline.queue_ingest.drain`, batches of `--batch-messages`)
while the parent polls its resident memory. The drain never reads ahead of its batch, so peak RSS should
not grow with the backlog; the issue's target is < 512 MB per process at any backlog.

moto answers ~250 PUT/s and ~280 GET/s, so the throughput printed here is moto's, not S3's: the figure that
matters is peak memory against backlog.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import arguments, console, entry, mib, run_child, table, timed_work, verdict

BUCKET = "bench-queue-trail"
QUEUE = "bench-trail-events"
TARGET_RSS = 512 * 2**20
DAY = dt.date(2024, 5, 1)


def _log(n: int, records: int) -> tuple[str, bytes]:
    """One log object (KMS events and as many EC2 ones, like a busy account) and its CloudTrail key."""
    when = DAY + dt.timedelta(days=n % 7)
    rows = []
    for i in range(records):
        source, name = ("kms.amazonaws.com", "Decrypt") if i % 2 else ("ec2.amazonaws.com", "DescribeInstances")
        rows.append(
            {
                "eventVersion": "1.09",
                "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::123456789012:assumed-role/app/{n}"},
                "eventTime": f"{when}T{n % 24:02d}:{i % 60:02d}:00Z",
                "eventSource": source,
                "eventName": name,
                "awsRegion": "us-east-1",
                "sourceIPAddress": "10.0.0.1",
                "userAgent": "aws-sdk-go/1.44",
                "requestParameters": {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
                "responseElements": None,
                "eventID": f"bench-{n}-{i}",
                "readOnly": True,
                "eventType": "AwsApiCall",
                "recipientAccountId": "123456789012",
            }
        )
    key = f"AWSLogs/123456789012/CloudTrail/us-east-1/{when:%Y/%m/%d}/123456789012_CloudTrail_us-east-1_{n:06d}.json.gz"
    return key, gzip.compress(json.dumps({"Records": rows}).encode(), mtime=0)


def _clients(endpoint: str) -> tuple[Any, Any]:
    from pipeline import aws

    return aws.client("s3", endpoint_url=endpoint), aws.client("sqs", endpoint_url=endpoint)


def _wire(endpoint: str) -> str:
    """The bucket, the queue and S3 -> SQS notifications on PutObject; the queue's URL."""
    s3, sqs = _clients(endpoint)
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=BUCKET)
    config = {"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]}
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=config)
    sqs.purge_queue(QueueUrl=url)  # the configuration's test event
    return url


def _fill(endpoint: str, start: int, count: int, records: int) -> None:
    """Put `count` log objects (numbered from `start`): S3 sends one notification each."""
    s3, _ = _clients(endpoint)

    def put(n: int) -> None:
        key, body = _log(n, records)
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(start, start + count)))


def child_drain(endpoint: str, url: str, lake: str, batch: str) -> dict[str, Any]:
    from pipeline import queue_ingest, sqs_queue
    from pipeline.queue_report import DrainOptions

    s3, sqs = _clients(endpoint)
    queue = sqs_queue.open_queue(sqs, sqs_queue.parse_queue_ref(url))
    options = DrainOptions(batch_messages=int(batch), wait_seconds=0)
    now = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    with timed_work({}) as result:
        report = queue_ingest.drain(queue, Path(lake), sqs_client=sqs, s3_client=s3, clock=lambda: now, options=options)
    result.update(messages=report.messages_deleted, events=report.ingest.events_kept, failed=report.messages_failed)
    return result


def main() -> None:
    parser = arguments(
        __doc__ or "", "uv run python bench/queue_drain.py --quick", "backlog (messages) of the small run", ""
    )
    parser.add_argument("--batch-messages", type=int, default=100, help="messages per lake commit")
    parser.add_argument("--records", type=int, default=200, help="records per log object")
    parser.add_argument("--factor", type=int, default=4, help="the large backlog is this many times the small")
    args = parser.parse_args()
    small = args.events or (100 if args.quick else 400)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    rows, peaks = [], []
    try:
        start, url = 0, _wire(endpoint)
        for backlog in (small, small * args.factor):
            _fill(endpoint, start, backlog, args.records)
            start += backlog
            with tempfile.TemporaryDirectory(prefix="bench-queue-lake-") as lake:
                measured = run_child(
                    Path(__file__), "drain", [endpoint, url, lake, str(args.batch_messages)], f"backlog {backlog:,}"
                )
            data = measured.data
            peaks.append(measured.max_rss)
            rows.append(
                [
                    measured.name,
                    f"{data['messages']:,}",
                    f"{data['events']:,}",
                    f"{data['failed']:,}",
                    f"{measured.wall:.1f} s",
                    f"{data['messages'] / measured.wall:,.0f}",
                    mib(measured.max_rss),
                ]
            )
    finally:
        server.stop()
    columns = ["drain", "messages", "events kept", "failed", "wall", "messages/s (moto)", "peak RSS"]
    table(f"queue drain, batches of {args.batch_messages} messages", columns, rows)
    growth = peaks[-1] / max(peaks[0], 1)
    console.print(f"peak RSS, {args.factor}x backlog / 1x: {growth:.2f}x")
    console.print(f"peak RSS < 512 MiB at every backlog: {verdict(max(peaks) < TARGET_RSS)}")


if __name__ == "__main__":
    entry(main, {"drain": child_drain})
