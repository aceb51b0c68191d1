"""Small real-shaped CloudTrail trails for the lake/ingest/s3 tests (independent of the simulator).

Records follow the shape of the real corpus (see ../shared/realdata): an IAM user calling KMS Decrypt with the
key named only in resources[], Secrets Manager GetSecretValue, and an EC2 call that ingest must drop.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import aws as awslib
from pipeline import lake as lakelib

BUCKET = "keytrail-test-trail"
ORG = "o-a1b2c3d4e5"
ACCOUNT = "123837392027"
REGION = "us-east-1"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/8a5c2f1e-0000-4000-8000-00000000c0de"


def record(event_id: str, when: str, name: str = "Decrypt", **overrides: Any) -> dict[str, Any]:
    """One CloudTrail record; `name` picks the service (GetSecretValue -> Secrets Manager, RunInstances -> EC2)."""
    source = {"GetSecretValue": "secretsmanager.amazonaws.com", "RunInstances": "ec2.amazonaws.com"}.get(
        name, "kms.amazonaws.com"
    )
    base: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEBERTJAN",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/bert-jan",
            "accountId": ACCOUNT,
            "accessKeyId": "AKIAEXAMPLE",
            "userName": "bert-jan",
        },
        "eventTime": when,
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": "84.84.84.84",
        "userAgent": "stratus-red-team_83f0",
        "requestParameters": {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        "responseElements": None,
        "requestID": f"req-{event_id}",
        "eventID": event_id,
        "readOnly": True,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": KEY_ARN}],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    if source != "kms.amazonaws.com":
        base["resources"] = None
        base["requestParameters"] = {"secretId": "prod/db"} if name == "GetSecretValue" else {"instanceType": "t3"}
    base.update(overrides)
    return base


def log_bytes(records: list[dict[str, Any]]) -> bytes:
    """A CloudTrail log object as delivered: gzipped {"Records": [...]}."""
    return gzip.compress(json.dumps({"Records": records}).encode(), mtime=0)


def log_key(
    day: dt.date,
    name: str,
    *,
    account: str = ACCOUNT,
    region: str = REGION,
    org: str | None = None,
    kind: str = "CloudTrail",
    prefix: str = "",
) -> str:
    """The S3 key CloudTrail uses for a log (or digest/insight) object of `day`."""
    org_part = f"{org}/" if org else ""
    head = f"{prefix.strip('/')}/" if prefix else ""
    return f"{head}AWSLogs/{org_part}{account}/{kind}/{region}/{day:%Y/%m/%d}/{account}_{kind}_{region}_{name}.json.gz"


def write_local(root: Path, key: str, data: bytes) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def day_of(index: int, start: dt.date = dt.date(2024, 5, 1)) -> dt.date:
    return start + dt.timedelta(days=index)


def lake_table(lake_path: Path) -> pa.Table:
    """Every committed row of the lake, in a stable order (for comparing lakes)."""
    files = lakelib.committed_files(lake_path)
    if not files:
        return pa.table({"event_id": pa.array([], pa.string())})
    table = pa.concat_tables(pq.read_table(path) for path in files)
    return table.sort_by([("event_id", "ascending")])


def glob_table(lake_path: Path) -> pa.Table:
    """What a plain `events/**/*.parquet` glob reader sees."""
    files = sorted(lakelib.events_dir(lake_path).glob("**/*.parquet"))
    if not files:
        return pa.table({"event_id": pa.array([], pa.string())})
    return pa.concat_tables(pq.read_table(path) for path in files).sort_by([("event_id", "ascending")])


class Crash(RuntimeError):
    pass


def crash_at(stage: str):
    def checkpoint(reached: str) -> None:
        if reached == stage:
            raise Crash(stage)

    return checkpoint


BAD_OBJECTS = {
    "corrupt-gzip": gzip.compress(b'{"Records": []}')[:10] + b"\x00garbage-garbage-garbage",
    "truncated-gzip": log_bytes([record("t-1", "2024-05-01T00:00:00Z")])[:-20],
    "truncated-json": gzip.compress(json.dumps({"Records": [record("tj", "2024-05-01T00:00:00Z")]}).encode()[:-30]),
    "no-records": gzip.compress(b'{"logFiles": ["x"]}'),
    "empty": b"",
    "not-json": gzip.compress(b"<html>503 Service Unavailable</html>"),
}
REASONS = {
    "corrupt-gzip": "corrupt gzip",
    "truncated-gzip": "corrupt gzip",
    "truncated-json": "invalid JSON",
    "no-records": "not a CloudTrail log file",
    "empty": "empty object",
    "not-json": "invalid JSON",
}


def s3_client(endpoint: str) -> Any:
    client = awslib.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


def put_all(client: Any, keys: list[str], body: bytes = b"{}") -> None:
    with ThreadPoolExecutor(8) as pool:  # moto answers ~250 PUT/s per connection; a few in parallel help
        list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=body), keys))


def commit_table(lake_path: Path, table: pa.Table, source: str = "test") -> None:
    """Commit normalized events to a lake through the real writer, as one source object (test lakes)."""
    from pipeline.s3 import LogObject

    obj = LogObject(source=source, bucket="", key=source, etag="t", size=0)
    with lakelib.BatchWriter(lake_path) as writer:
        for batch in table.to_batches(max_chunksize=1000):
            writer.add(batch, [(obj, batch.num_rows)])
        writer.record_read(obj, seen=table.num_rows)
        writer.commit()
