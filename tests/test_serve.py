"""`keytrail serve` against a real local Prefect server: the deployments exist with their schedules, and a run
of the pipeline deployment started with `run_deployment` completes and fills the lake.

Schedules never fire on Prefect's temporary server, so this is the only way to test them: a real
`prefect server start` on loopback, the serve process beside it, both stopped with SIGTERM (then SIGKILL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trails import ACCOUNT, lake_table, log_bytes, log_key, record

from flows.clients import client as cached_client
from pipeline.demo import terminate

pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.slow]

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, process: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}")
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what}: not ready after {timeout:.0f} s")


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prefect server on 127.0.0.1 with its own PREFECT_HOME; yields its API URL and a client env."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url}
    server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: healthy(api_url), START_TIMEOUT_S, "prefect server", server)
        yield api_url, env
    finally:
        terminate(server, timeout=20)
        log.close()


def deployment(api_url: str, name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            return asyncio.run(read())
        except Exception:  # not registered yet (ObjectNotFound) or the server is still warming up
            return None


def test_served_pipeline_deployment_runs_to_completion(
    prefect_server: tuple[str, dict[str, str]], aws: str, tmp_path: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import BACKFILL_DEPLOYMENT, COMPACT_DEPLOYMENT, PIPELINE_DEPLOYMENT

    api_url, env = prefect_server
    day = dt.date(2024, 5, 8)
    s3 = cached_client("s3", aws, None)
    s3.create_bucket(Bucket="keytrail-served-trail")
    records = [record(f"served-{n}", f"2024-05-08T10:0{n}:00Z") for n in range(4)]
    key = log_key(day, "20240508T1010Z_served", account=ACCOUNT)
    s3.put_object(Bucket="keytrail-served-trail", Key=key, Body=log_bytes(records))
    lake = tmp_path / "lake"

    # The runner polls for due runs every 10 s by default; the run should not wait for that here.
    serve_env = {**env, "KEYTRAIL_ENDPOINT_URL": aws, "KEYTRAIL_LAKE": str(lake), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve_env["PREFECT_LOGGING_LEVEL"] = "INFO"  # what an operator sees (the test session runs at WARNING)
    serve_env.pop("KEYTRAIL_TOPIC_ARN", None)
    log = (tmp_path / "serve.log").open("wb")
    served = subprocess.Popen(
        [str(BIN / "keytrail"), "serve", "s3://keytrail-served-trail", "--every", "5m", "--no-publish"],
        env=serve_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,  # module-path entry points: runs must not depend on the working directory
    )
    try:
        pipeline = wait_until(lambda: deployment(api_url, PIPELINE_DEPLOYMENT), START_TIMEOUT_S, "serve", served)
        daily = wait_until(lambda: deployment(api_url, COMPACT_DEPLOYMENT), 30, "serve (compact)", served)
        history = wait_until(lambda: deployment(api_url, BACKFILL_DEPLOYMENT), 30, "serve (backfill)", served)
        assert not history.schedules and history.parameters["source"] == "s3://keytrail-served-trail"
        assert pipeline.schedules[0].schedule.interval == dt.timedelta(minutes=5)
        assert daily.schedules[0].schedule.cron == "30 0 * * *"
        assert pipeline.parameters["lake"] == str(lake.resolve())
        assert pipeline.entrypoint == "flows.pipeline.keytrail_pipeline"

        with temporary_settings({PREFECT_API_URL: api_url}):
            run = run_deployment(
                PIPELINE_DEPLOYMENT,
                parameters={"now": "2024-05-08T10:30:00Z"},
                timeout=180,
                poll_interval=1,
                as_subflow=False,
            )
        assert run.state is not None and run.state.is_completed(), (run.state, log_tail(tmp_path / "serve.log"))
        assert lake_table(lake).num_rows == 4
        # The run logs hold the library's own lines (PREFECT_LOGGING_EXTRA_LOGGERS) and the per-task counts.
        logs = run_logs(api_url)
        assert any(entry.name == "pipeline.ingest" and "4 kept" in entry.message for entry in logs), logs
        assert any(entry.name == "prefect.task_runs" and "4 events kept" in entry.message for entry in logs)
    finally:
        terminate(served, timeout=20)
        log.close()
    assert served.returncode is not None


def run_logs(api_url: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> list[Any]:
        async with get_client() as client:
            return list(await client.read_logs(limit=200))

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(read())


def test_serve_without_a_prefect_server_says_how_to_start_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path)  # no profile with an API URL either
    result = subprocess.run(
        [str(BIN / "keytrail"), "serve", "s3://some-trail"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "prefect server start --host 127.0.0.1" in " ".join(result.stdout.split())


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]
