"""The analyst's screen: every table-printing command fits 80 and 200 columns without breaking a value, never
turns `:secret:` into an emoji, and leaves every ARN recoverable (`--full` or `--format json`); every command
the CLI tells a user to paste (query show examples, runbook steps) runs exactly as printed."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import socket
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from pipeline import analysis, investigate, runbook
from pipeline.alerting.outbox import Outbox
from pipeline.cli import app
from tests.analyst_lake import END, LAST_DAY, AnalystLake, analyst_lake_fixture
from tests.trails import lake_table, log_bytes, log_key, record, write_local

analyst_lake = pytest.fixture(scope="session")(analyst_lake_fixture)
runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ARN = re.compile(r"arn:aws[^\s\"',]*")
SECRETS_SQL = "SELECT principal_arn, secret_id, key_arn, event_time FROM events WHERE secret_id IS NOT NULL LIMIT 40"
DAY = ["--since", LAST_DAY.date().isoformat(), "--until", END.date().isoformat()]


def _commands(lake: Path, alert_id: str) -> dict[str, list[str]]:
    flag = ["--lake", str(lake)]
    return {
        "query list": ["query", "list"],
        "query show": ["query", "show", "key_usage", *flag],
        "query run denied_activity": ["query", "run", "denied_activity", *DAY, *flag],
        "query run principal_activity": [
            "query",
            "run",
            "principal_activity",
            "--param",
            "principal=mallory@example.com",
            *DAY,
            *flag,
        ],
        "sql": ["sql", SECRETS_SQL, *flag],
        "alerts list": ["alerts", "list", *flag],
        "alerts show": ["alerts", "show", alert_id, *flag],
        "detect": ["detect", *DAY, *flag],
        "backtest": ["backtest", "--since", "2024-05-06", "--until", END.date().isoformat(), *flag],
    }


def _run(args: list[str], columns: int, *, terminal: bool = True) -> str:
    env = {"COLUMNS": str(columns), "NO_COLOR": "1", "TTY_COMPATIBLE": "1" if terminal else "0", "UV": ""}
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, (args, result.output)
    return ANSI.sub("", result.stdout)  # bold headers: styles are not text


def _arns(text: str) -> set[str]:
    return {m.rstrip(".)") for m in ARN.findall(text)}


@pytest.mark.parametrize("name", list(_commands(Path("x"), "x")))
@pytest.mark.parametrize("columns", [80, 200])
def test_every_table_fits_the_terminal_without_breaking_a_value(
    analyst_lake: AnalystLake, name: str, columns: int
) -> None:
    args = _commands(analyst_lake.path, analyst_lake.alert_ids[0][:12])[name]
    shown = _run(args, columns)
    assert "㊙" not in shown, name
    whole = _arns(shown if name == "query show" else _run([*args, "--format", "json"], columns))
    for line in shown.splitlines():
        for token in line.split():
            token = token.strip("`().,")
            if not token.startswith("arn:"):
                continue
            if "…" in token:  # shortened in the middle: its head and tail belong to one whole ARN
                head, _, tail = token.partition("…")
                assert any(a.startswith(head) and a.endswith(tail) for a in whole), (name, token)
            else:  # shown whole: never a piece of an ARN broken at the line's end
                assert token in whole, (name, token, line)
    if name not in ("alerts show", "query show"):  # these print one value per line, whole (soft-wrapped)
        assert all(len(line) <= columns for line in shown.splitlines()), (name, max(shown.splitlines(), key=len))
    if name in ("query run denied_activity", "sql"):  # ARN columns: --full shows every one whole
        assert whole and whole <= _arns(_run([*args, "--full"], columns)), name


def test_json_of_alerts_show_parses_when_piped(analyst_lake: AnalystLake) -> None:
    alert_id = analyst_lake.alert_ids[0]
    printed = _run(
        ["alerts", "show", alert_id[:10], "--lake", str(analyst_lake.path), "--format", "json"], 80, terminal=False
    )
    document = json.loads(printed)
    assert document["alert_id"] == alert_id and document["outbox"]["state"] and document["history"]


def test_piped_tables_are_plain_and_whole(analyst_lake: AnalystLake) -> None:
    args = ["sql", SECRETS_SQL, "--lake", str(analyst_lake.path)]
    piped = _run(args, 80, terminal=False)
    assert "…" not in piped and "\x1b" not in piped and "─" not in piped
    assert _arns(piped) == _arns(_run([*args, "--format", "json"], 80))
    assert any(":secret:" in arn for arn in _arns(piped))


@pytest.mark.parametrize("query_id", [q.id for q in investigate.load()])
def test_query_show_examples_run_exactly_as_printed(analyst_lake: AnalystLake, query_id: str) -> None:
    """Printed with the prefix of the running keytrail (here `uv run keytrail`): run exactly those words."""
    result = runner.invoke(app, ["query", "show", query_id, "--lake", str(analyst_lake.path)], env={"UV": "uv"})
    example = result.stdout.strip().splitlines()[-1]
    words = shlex.split(example)
    assert words[:3] == ["uv", "run", "keytrail"], example
    ran = runner.invoke(app, words[3:], env={"COLUMNS": "200"})
    assert ran.exit_code == 0, (example, ran.output)


def test_every_runbook_command_runs_as_printed(analyst_lake: AnalystLake) -> None:
    with Outbox.open(analyst_lake.path, create=False) as box:
        alerts = [entry.alert for entry in box.entries(None)]
    ran = 0
    for alert in alerts:
        shown = _run(["alerts", "show", alert.alert_id, "--lake", str(analyst_lake.path)], 200)
        for command in runbook.commands(alert.runbook, alert, lake=analyst_lake.path):
            assert command in shown  # alerts show prints it as it is run here
            words = shlex.split(command)
            assert words[0] == "keytrail" and "<" not in command, command
            result = runner.invoke(app, [*words[1:], "--format", "json"], env={"COLUMNS": "200"})
            assert result.exit_code == 0, (command, result.output)
            ran += 1
    assert ran >= len(alerts)  # every alert's runbook names at least one command on average


def test_serve_without_a_prefect_server_says_so_in_one_line() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    # the setting itself, not only the environment: a worker that ran the Prefect harness holds its URL in context
    with temporary_settings(updates={PREFECT_API_URL: url}):
        result = runner.invoke(app, ["serve", "s3://trail-bucket"], env={"PREFECT_API_URL": url, "COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "prefect server start" in lines[0], result.output
    assert "Traceback" not in result.output and "serving" not in result.output


def test_ingest_until_is_exclusive_and_takes_relative_times(tmp_path: Path) -> None:
    """--until 2024-05-02 reads May 1 only, as every other command's --until stops before it."""
    trail = tmp_path / "trail"
    for day in (1, 2):
        when = f"2024-05-0{day}T10:00:00Z"
        key = log_key(dt.date(2024, 5, day), f"2024050{day}T1000Z_a")
        write_local(trail, key, log_bytes([record(f"e{day}", when)]))
    lake = tmp_path / "lake"
    args = ["ingest", str(trail), "--lake", str(lake), "--workers", "1"]
    first = runner.invoke(app, [*args, "--since", "2024-05-01", "--until", "2024-05-02"])
    assert first.exit_code == 0, first.output
    assert sorted(lake_table(lake)["event_id"].to_pylist()) == ["e1"]
    relative = runner.invoke(app, [*args, "--since", "-3000d", "--until", "now"])
    assert relative.exit_code == 0, relative.output
    assert sorted(lake_table(lake)["event_id"].to_pylist()) == ["e1", "e2"]
    wrong = runner.invoke(app, [*args, "--since", "May 1"])
    assert wrong.exit_code == 2 and "YYYY-MM-DD" in " ".join(wrong.output.split())


def test_detect_with_an_empty_default_window_says_where_the_data_is(analyst_lake: AnalystLake) -> None:
    shown = _run(["detect", "--lake", str(analyst_lake.path)], 200)
    said = " ".join(shown.split())
    assert "no findings in" in said and "the default window: the last hour" in said
    assert "2024-05-01 to 2024-05-08" in said and "--since 2024-05-01 --until 2024-05-09" in said
    relative = _run(["detect", "--lake", str(analyst_lake.path), "--since", "-2d", "--until", "-30m"], 200)
    assert "no findings in" in relative and "default window" not in relative


def test_investigate_defaults_to_the_worst_alert_of_the_lakes_last_day(analyst_lake: AnalystLake) -> None:
    """Not the wall clock's last 24 hours: years later, the lake's last day still has its critical alert."""
    focus = analysis.subject(analyst_lake.path, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert focus.alert is not None and focus.alert.severity == "critical"
    assert LAST_DAY <= focus.alert.first_seen < END
    assert analysis.last_day(analyst_lake.path) == (LAST_DAY, END)


def test_a_notebooks_relative_lake_is_the_users_not_the_kernels(tmp_path: Path) -> None:
    (tmp_path / "demo-lake").mkdir()
    default = Path("keytrail-lake")
    assert analysis.lake_path("demo-lake", default=default, started_in=tmp_path) == tmp_path / "demo-lake"
    assert analysis.lake_path(None, default=Path("/abs/lake"), started_in=tmp_path) == Path("/abs/lake")
    # not where the user started: the repository root (a kernel runs in notebooks/, never the base)
    assert analysis.lake_path("no-such-lake", default=default, started_in=None) == analysis.REPOSITORY / "no-such-lake"
