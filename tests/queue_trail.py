"""A CloudTrail bucket wired to an SQS queue on the moto server, by each of the routes S3 notifications take.

`put_bucket_notification_configuration` makes moto deliver real notifications on PutObject: straight to SQS,
through an SNS topic subscribed by the queue (enveloped, or raw), or through EventBridge (a rule targeting
the queue).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from trails import BUCKET, log_bytes, log_key, record

from pipeline import aws as awslib
from pipeline import queue_ingest, sqs_queue
from pipeline.queue_report import DrainOptions, QueueReport

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
ROUTES = ("sqs", "sns", "sns-raw", "eventbridge")
# Quick tests: no long poll at the end, failed messages back at once.
FAST = {"wait_seconds": 0, "visibility_seconds": 30, "retry_delay_seconds": 0}


class QueueTrail:
    def __init__(self, endpoint: str, queue: str = "trail-events", max_receive_count: int | None = None) -> None:
        self.endpoint = endpoint
        self.s3 = awslib.client("s3", endpoint_url=endpoint)
        self.sqs = awslib.client("sqs", endpoint_url=endpoint)
        self.s3.create_bucket(Bucket=BUCKET)
        attributes: dict[str, str] = {}
        self.dead_letter_url: str | None = None
        if max_receive_count is not None:
            self.dead_letter_url = self.sqs.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
            policy = {"deadLetterTargetArn": self.arn(self.dead_letter_url), "maxReceiveCount": max_receive_count}
            attributes["RedrivePolicy"] = json.dumps(policy)
        self.url = self.sqs.create_queue(QueueName=queue, Attributes=attributes)["QueueUrl"]

    def arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def wire(self, route: str) -> None:
        """Make PutObject in the bucket notify the queue by `route`."""
        created = ["s3:ObjectCreated:*"]
        if route == "sqs":
            config: dict[str, Any] = {"QueueConfigurations": [{"QueueArn": self.arn(self.url), "Events": created}]}
        elif route in ("sns", "sns-raw"):
            sns = awslib.client("sns", endpoint_url=self.endpoint)
            topic = sns.create_topic(Name="trail-notifications")["TopicArn"]
            subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=self.arn(self.url))
            if route == "sns-raw":
                sns.set_subscription_attributes(
                    SubscriptionArn=subscription["SubscriptionArn"],
                    AttributeName="RawMessageDelivery",
                    AttributeValue="true",
                )
            config = {"TopicConfigurations": [{"TopicArn": topic, "Events": created}]}
        elif route == "eventbridge":
            events = awslib.client("events", endpoint_url=self.endpoint)
            pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"]}
            events.put_rule(Name="trail-object-created", EventPattern=json.dumps(pattern))
            events.put_targets(Rule="trail-object-created", Targets=[{"Id": "queue", "Arn": self.arn(self.url)}])
            config = {"EventBridgeConfiguration": {}}
        else:
            raise ValueError(route)
        self.s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=config)

    def put_log(self, day: dt.date, name: str, events: int = 2, hour: int = 0, prefix: str = "") -> list[str]:
        """Deliver one log object (KMS events plus one EC2 event ingest drops); its KMS event ids."""
        ids = [f"{day}-{name}-{n}" for n in range(events)]
        records = [record(event_id, f"{day}T{hour:02d}:{n:02d}:00Z") for n, event_id in enumerate(ids)]
        records.append(record(f"{day}-{name}-ec2", f"{day}T{hour:02d}:00:00Z", "RunInstances"))
        self.s3.put_object(Bucket=BUCKET, Key=log_key(day, name, prefix=prefix), Body=log_bytes(records))
        return ids

    def send(self, body: Any) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body if isinstance(body, str) else json.dumps(body))

    def waiting(self, url: str | None = None) -> int:
        """Messages on the queue, visible or in flight."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        found = self.sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=names)["Attributes"]
        return sum(int(found[name]) for name in names)

    def drain(self, lake: Any, **options: Any) -> QueueReport:
        queue = sqs_queue.open_queue(self.sqs, sqs_queue.parse_queue_ref(self.url))
        progress = options.pop("progress", None)
        on_batch = options.pop("on_batch", None)
        return queue_ingest.drain(
            queue,
            lake,
            sqs_client=self.sqs,
            s3_client=self.s3,
            clock=lambda: NOW,
            options=DrainOptions(**{**FAST, **options}),
            progress=progress,
            on_batch=on_batch,
        )
