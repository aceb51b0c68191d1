"""boto3 client factory: the only place a boto3 client is created. Clients are passed in everywhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

# Standard retry mode retries throttling and 5xx with backoff; adaptive adds client-side rate limiting.
_RETRIES = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32)


def client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> Any:
    """A boto3 client for `service` (credentials from the standard chain, or `credentials` as STS AssumeRole
    returns them; endpoint e.g. a moto server)."""
    keys = (
        {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials.get("SessionToken"),
        }
        if credentials
        else {}
    )
    return boto3.session.Session(**keys).client(
        service, endpoint_url=endpoint_url, region_name=region or "us-east-1", config=_RETRIES
    )
