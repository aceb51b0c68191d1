"""boto3 clients for tasks, made on first use and reused by every task of the process.

`pipeline.aws.client` builds a fresh session each call, which re-reads the service model JSON (~80 ms); a
flow maps dozens of tasks, so each worker process (thread-pool or Dask) keeps one client per endpoint.
boto3 clients are thread-safe; they are never shipped between processes.
"""

from __future__ import annotations

import functools
from typing import Any

from pipeline import aws


@functools.lru_cache(maxsize=16)
def client(service: str, endpoint_url: str | None, region: str | None) -> Any:
    return aws.client(service, endpoint_url=endpoint_url, region=region)


def s3_client_for(source: str, endpoint_url: str | None, region: str | None) -> Any | None:
    """The S3 client an s3:// source needs; None for a local folder."""
    return client("s3", endpoint_url, region) if source.startswith("s3://") else None
