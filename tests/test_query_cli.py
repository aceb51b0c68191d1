"""`keytrail query list|show|run` and `keytrail sql` against a simulated lake (tests/analyst_lake.py).

Every investigation's printed example is run as printed, and must return rows on the simulated lake.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import investigate, lake
from pipeline.cli import app
from tests.analyst_lake import AnalystLake, analyst_lake_fixture

runner = CliRunner()
INVESTIGATIONS = [q.id for q in investigate.load()]
analyst_lake = pytest.fixture(scope="session")(analyst_lake_fixture)


def keytrail(*args: str) -> tuple[int, str, str]:
    # UV unset: prints as an installed keytrail does (tests/test_screen.py runs the `uv run keytrail` form)
    result = runner.invoke(app, list(args), env={"COLUMNS": "250", "UV": ""})
    return result.exit_code, result.stdout, result.stderr


def test_list_names_every_investigation_and_its_required_params() -> None:
    code, out, _ = keytrail("query", "list")
    assert code == 0
    for query in investigate.load():
        assert query.id in out
        for param in query.params:
            if param.required:
                assert param.name in out


@pytest.mark.parametrize("query_id", INVESTIGATIONS)
def test_show_prints_an_example_that_runs_on_the_lake(query_id: str, analyst_lake: AnalystLake) -> None:
    code, out, _ = keytrail("query", "show", query_id, "--lake", str(analyst_lake.path))
    assert code == 0, out
    query = investigate.get(query_id)
    for name, *_ in investigate.describe_params(query):
        assert name in out
    assert query.next_steps[0][:30] in " ".join(out.split())
    command = out.strip().splitlines()[-1]
    words = shlex.split(command)
    assert words[:4] == ["keytrail", "query", "run", query_id]
    assert words[words.index("--lake") + 1] == str(analyst_lake.path)
    code, rows, err = keytrail(*words[1:], "--format", "json")
    assert code == 0, err
    records = [json.loads(line) for line in rows.splitlines()]
    assert records, f"{command} returned no rows on the simulated lake"
    if query_id == "alert_evidence":
        assert {r["alert_id"] for r in records} & set(analyst_lake.alert_ids)


def test_show_without_a_lake_prints_the_yaml_example(tmp_path: Path) -> None:
    code, out, _ = keytrail("query", "show", "key_usage", "--lake", str(tmp_path / "none"))
    assert code == 0
    assert out.strip().splitlines()[-1] == investigate.example_command(investigate.get("key_usage"))


def test_run_with_an_unknown_param_lists_the_valid_ones(analyst_lake: AnalystLake) -> None:
    code, _, err = keytrail("query", "run", "key_usage", "--param", "kee=x", "--lake", str(analyst_lake.path))
    assert code == 2
    flat = " ".join(err.split())
    assert "kee" in flat and "Valid: key (str, required)" in flat and "bucket (duration" in flat


def test_run_without_a_required_param_says_which_and_shows_an_example(analyst_lake: AnalystLake) -> None:
    code, _, err = keytrail("query", "run", "secret_access", "--lake", str(analyst_lake.path))
    assert code == 2
    flat = " ".join(err.split())
    assert "secret_access needs secret" in flat and "keytrail query run secret_access --param" in flat


def test_run_rejects_a_bad_time_and_an_unknown_query(analyst_lake: AnalystLake) -> None:
    code, _, err = keytrail(
        "query", "run", "denied_activity", "--since", "yesterday-ish", "--lake", str(analyst_lake.path)
    )
    assert code == 2 and "not a time" in err
    code, _, err = keytrail("query", "run", "no_such_query", "--lake", str(analyst_lake.path))
    assert code == 2 and "principal_activity" in err  # the known ids are listed


def test_run_on_a_missing_lake_says_how_to_make_one(tmp_path: Path) -> None:
    code, _, err = keytrail("query", "run", "denied_activity", "--lake", str(tmp_path / "nowhere"))
    assert code == 2 and "keytrail ingest" in err


def test_run_formats_csv_json_parquet_agree(analyst_lake: AnalystLake, tmp_path: Path) -> None:
    base = ["query", "run", "denied_activity", "--since", "2024-05-08", "--until", "2024-05-09"]
    base += ["--lake", str(analyst_lake.path)]
    code, as_json, _ = keytrail(*base, "--format", "json")
    assert code == 0
    rows = [json.loads(line) for line in as_json.splitlines()]
    code, as_csv, _ = keytrail(*base, "--format", "csv")
    assert code == 0 and len(as_csv.strip().splitlines()) == len(rows) + 1
    assert code == 0
    out = tmp_path / "denied.parquet"
    code, _, err = keytrail(*base, "--format", "parquet", "--output", str(out))
    assert code == 0 and f"{len(rows)} rows written" in err
    table = pq.read_table(out)
    assert table.num_rows == len(rows) > 0
    assert sum(table.column("event_count").to_pylist()) == sum(r["event_count"] for r in rows)
    assert all(r["first_seen"].endswith("Z") for r in rows)
    code, _, err = keytrail(*base, "--format", "parquet")
    assert code == 2 and "--output" in err


def test_alert_evidence_resolves_a_short_alert_id_from_the_outbox(analyst_lake: AnalystLake) -> None:
    alert_id = analyst_lake.alert_ids[0]
    code, out, err = keytrail(
        "query", "run", "alert_evidence", "--param", f"alert_id={alert_id[:10]}", "--format", "json",
        "--lake", str(analyst_lake.path),
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and {r["alert_id"] for r in rows} == {alert_id}
    code, _, err = keytrail("query", "run", "alert_evidence", "--param", "alert_id=ffffffffff", "--lake",
                            str(analyst_lake.path))  # fmt: skip
    assert code == 2 and "keytrail alerts list" in err


def test_sql_reads_the_lake(analyst_lake: AnalystLake) -> None:
    code, out, err = keytrail(
        "sql", "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events", "--format", "json",
        "--lake", str(analyst_lake.path),
    )  # fmt: skip
    assert code == 0, err
    row = json.loads(out)
    assert row["n"] == row["ids"] > 1000
    assert row["n"] == sum(pq.ParquetFile(f).metadata.num_rows for f in lake.committed_files(analyst_lake.path))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_parquet('/tmp/*.parquet')",
        "COPY (SELECT 1) TO '/tmp/keytrail-should-not-exist.csv'",
        "SET enable_external_access = true",
        "SELECT 1; SELECT 2",
    ],
)
def test_sql_refuses_files_writes_settings_and_several_statements(sql: str, analyst_lake: AnalystLake) -> None:
    code, out, err = keytrail("sql", sql, "--lake", str(analyst_lake.path))
    assert code == 2 and "refused" in err
    if "read_" in sql:
        assert "events" in err and "root:" not in out  # says what it can read instead
    assert not Path("/tmp/keytrail-should-not-exist.csv").exists()


def test_every_command_has_help_with_an_example() -> None:
    for command in (["query", "list"], ["query", "show"], ["query", "run"], ["sql"], ["report"]):
        code, out, _ = keytrail(*command, "--help")
        assert code == 0 and "Example: keytrail" in " ".join(out.split()), command
