"""`keytrail ingest sqs://QUEUE` / `--queue`: the summary, exit codes, and errors that say what to do."""

from __future__ import annotations

from pathlib import Path

from queue_trail import QueueTrail
from trails import day_of, lake_table
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
FAST = ["--wait-seconds", "0", "--retry-delay", "0"]


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["ingest", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_ingest_from_a_queue_url_prints_what_it_did(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    trail.wire("sns")
    wanted = trail.put_log(day_of(0), "a") + trail.put_log(day_of(1), "b")
    sqs_uri = "sqs://" + trail.url.removeprefix("http://")  # host/account/name, as the flag takes it
    code, output = invoke(sqs_uri, "--endpoint-url", aws, "--lake", str(lake), *FAST)
    assert code == 0, output
    assert "messages deleted (committed)" in output and "events kept" in output and "messages via sns" in output
    assert "no redrive policy" in output  # advice: this queue has no dead-letter queue
    assert sorted(lake_table(lake).column("event_id").to_pylist()) == sorted(wanted)

    code, output = invoke("--queue", "trail-events", "--endpoint-url", aws, "--lake", str(lake), *FAST)
    assert code == 0 and "the queue was empty" in output
    assert invoke("--queue", trail.url, "--endpoint-url", aws, "--lake", str(lake), *FAST)[0] == 0


def test_failed_messages_exit_4_and_are_listed(aws: str, lake: Path) -> None:
    trail = QueueTrail(aws)
    trail.send("not a notification")
    code, output = invoke(
        "--queue", trail.url, "--endpoint-url", aws, "--lake", str(lake), "--max-receives", "1", *FAST
    )
    assert code == 4, output
    assert "messages that failed" in output and "not an S3 notification" in output


def test_queue_errors_say_what_to_do(aws: str, lake: Path) -> None:
    code, output = invoke("sqs://no-such-queue", "--endpoint-url", aws, "--lake", str(lake), *FAST)
    assert code == 1 and "no such queue" in output and "--endpoint-url" in output
    code, output = invoke("s3://bucket", "--queue", "q", "--lake", str(lake))
    assert code == 2 and "takes no SOURCE" in output
    code, output = invoke("sqs://q", "--since", "2024-05-01", "--lake", str(lake))
    assert code == 2 and "--since" in output
    code, output = invoke("sqs://", "--lake", str(lake))
    assert code == 2 and "sqs://QUEUE-URL" in output
    code, output = invoke("--lake", str(lake))
    assert code == 2 and "give a SOURCE" in output


def test_help_shows_a_queue_example() -> None:
    result = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "keytrail ingest sqs://" in result.output and "--visibility-timeout" in result.output
