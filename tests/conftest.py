"""Shared fixtures: a real moto server on 127.0.0.1, a temporary lake, an isolated PREFECT_HOME.

The environment is set before anything imports boto3 or prefect, so no test can reach a real endpoint
(or the EC2 metadata address) by accident.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="keytrail-prefect-")
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MPLCONFIGDIR": tempfile.mkdtemp(prefix="keytrail-mpl-"),
    "MPLBACKEND": "Agg",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
FIXTURES = Path(__file__).resolve().parents[1] / "queries" / "fixtures"  # base events, shipped with the queries


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server (S3, SNS, SQS) on 127.0.0.1, started once per test session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str) -> str:
    """The moto endpoint with all state cleared: each test starts with no buckets, topics or queues."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    return moto_endpoint


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """An empty lake directory."""
    path = tmp_path / "lake"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The shared real-CloudTrail corpus (read-only), which ships beside the repository as ../shared/realdata.

    A fresh clone has nothing beside it: the tests that need the corpus are skipped, saying why. CI has the
    corpus, so there (CI=true) a missing one fails: a silent skip would hide a regression. A corpus that is
    present is always used, and a broken one fails its tests.
    """
    if not REALDATA.exists():
        reason = f"real-data corpus not found at {REALDATA}: it ships beside the repository as ../shared/realdata"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: CI must have it)")
        pytest.skip(reason)
    return REALDATA
