"""Hostile input never blinds the pipeline: odd eventTimes, a poisoned lake, bad time flags, sandbox escapes.

Each test drives the real path (ingest of a folder or S3 object, the CLI through typer's runner) and checks what a
user would see: where an event lands, what is quarantined and why, and that every error is one line, not a
traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trails import BUCKET, KEY_ARN, lake_table, log_bytes, log_key, record, s3_client, write_local
from typer.testing import CliRunner

from pipeline import events, ingest, investigate
from pipeline import lake as lakelib
from pipeline.cli import app
from pipeline.detect import run_detections
from pipeline.engine import Engine

DAY = dt.date(2024, 5, 8)
runner = CliRunner()


def keytrail(*args: str) -> tuple[int, str, str, BaseException | None]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "1000"})  # no wrapping: count lines as printed
    return result.exit_code, result.stdout, result.stderr, result.exception


def assert_one_line_error(code: int, err: str, exception: BaseException | None, expected_code: int) -> None:
    """The error contract of every command: the exit code, one `error:` line on stderr, no traceback."""
    assert isinstance(exception, SystemExit), f"uncaught {exception!r}"
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def trail_with(root: Path, records: list[dict[str, object]], name: str = "a", day: dt.date = DAY) -> Path:
    return write_local(root, log_key(day, name), log_bytes(records))


def quarantined_reasons(lake: Path) -> dict[str, str]:
    """eventID -> reason of every record kept in quarantine/records/."""
    found = {}
    for path in sorted((lakelib.quarantine_dir(lake) / "records").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            found[json.loads(entry["record"])["eventID"]] = entry["reason"]
    return found


# --- eventTime: offsets honoured ----------------------------------------------------------------------------------


def test_an_event_time_with_an_offset_is_stored_at_its_utc_instant(tmp_path: Path, lake: Path) -> None:
    trail_with(
        tmp_path / "trail",
        [
            record("plus-5", "2024-05-08T10:15:00+05:00"),
            record("day-before", "2024-05-08T02:00:00+05:00"),  # still the 7th in UTC
            record("behind", "2024-05-08T22:30:00.250-03:00"),  # already the 9th in UTC
            record("zulu", "2024-05-08T10:15:00Z"),
        ],
    )
    report = ingest.ingest(str(tmp_path / "trail"), lake)
    assert (report.events_kept, report.events_rejected) == (4, 0)
    rows = {row["event_id"]: row for row in lake_table(lake).to_pylist()}
    utc = dt.UTC
    assert rows["plus-5"]["event_time"] == dt.datetime(2024, 5, 8, 5, 15, tzinfo=utc)
    assert rows["day-before"]["event_time"] == dt.datetime(2024, 5, 7, 21, 0, tzinfo=utc)
    assert rows["behind"]["event_time"] == dt.datetime(2024, 5, 9, 1, 30, tzinfo=utc)  # to the second, like Z times
    assert rows["zulu"]["event_time"] == dt.datetime(2024, 5, 8, 10, 15, tzinfo=utc)
    assert {event_id: row["event_date"] for event_id, row in rows.items()} == {
        "plus-5": dt.date(2024, 5, 8),
        "day-before": dt.date(2024, 5, 7),
        "behind": dt.date(2024, 5, 9),
        "zulu": dt.date(2024, 5, 8),
    }
    assert lakelib.partitions(lake) == [dt.date(2024, 5, 7), dt.date(2024, 5, 8), dt.date(2024, 5, 9)]


# --- eventTime: outside the sane span is a bad record -------------------------------------------------------------


def test_a_year_9999_record_is_quarantined_and_the_rest_of_its_object_kept(tmp_path: Path, lake: Path) -> None:
    trail_with(
        tmp_path / "trail",
        [
            record("ok-1", "2024-05-08T10:00:00Z"),
            record("doom", "9999-12-31T23:59:59Z"),
            record("ok-2", "2024-05-08T11:00:00Z"),
        ],
    )
    report = ingest.ingest(str(tmp_path / "trail"), lake)
    assert (report.events_seen, report.events_kept, report.events_rejected) == (3, 2, 1)
    assert report.objects_quarantined == 0 and report.quarantined_anything
    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["ok-1", "ok-2"]
    assert lakelib.partitions(lake) == [DAY]  # no event_date=9999-12-31
    reasons = quarantined_reasons(lake)
    assert list(reasons) == ["doom"]
    assert "9999-12-31T23:59:59Z" in reasons["doom"] and "outside" in reasons["doom"]
    assert "9999-12-31T23:59:59Z" in report.quarantine[0].reason


def test_event_times_are_bounded_by_cloudtrail_start_and_a_day_after_the_file_was_written(
    tmp_path: Path, lake: Path
) -> None:
    path = trail_with(
        tmp_path / "trail",
        [
            record("in-time", "2024-05-08T09:00:00Z"),
            record("skewed", "2024-05-09T11:00:00Z"),  # 23 h after the file was written: clock skew, kept
            record("future", "2024-05-09T13:00:00Z"),  # 25 h after: not something that happened
            record("ancient", "2012-12-31T23:59:59Z"),  # before CloudTrail existed
            record("offset-future", "2024-05-09T15:00:00+02:00"),  # 13:00Z: the instant counts, not the text
        ],
    )
    written = dt.datetime(2024, 5, 8, 12, 0, tzinfo=dt.UTC)
    os.utime(path, (written.timestamp(), written.timestamp()))
    report = ingest.ingest(str(tmp_path / "trail"), lake)
    assert sorted(lake_table(lake).column("event_id").to_pylist()) == ["in-time", "skewed"]
    assert report.events_rejected == 3
    reasons = quarantined_reasons(lake)
    assert sorted(reasons) == ["ancient", "future", "offset-future"]
    assert "a day after its log object was written, 2024-05-08 12:00:00Z" in reasons["future"]
    assert "2013-01-01" in reasons["ancient"]


def test_an_s3_object_is_bounded_by_its_last_modified_time(aws: str, lake: Path) -> None:
    client = s3_client(aws)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)  # moto stamps LastModified with the time of the put
    body = log_bytes([record("real", "2024-05-08T10:00:00Z"), record("ahead", ahead.strftime("%Y-%m-%dT%H:%M:%SZ"))])
    client.put_object(Bucket=BUCKET, Key=log_key(DAY, "a"), Body=body)
    report = ingest.ingest(f"s3://{BUCKET}", lake, s3_client=client)
    assert (report.events_kept, report.events_rejected) == (1, 1)
    assert lake_table(lake).column("event_id").to_pylist() == ["real"]
    assert "a day after its log object was written" in quarantined_reasons(lake)["ahead"]


# --- a lake that already holds such a partition ---------------------------------------------------------------


@pytest.fixture
def poisoned_lake(lake: Path) -> Path:
    """A lake as ingest wrote it before it bounded eventTimes: a normal day plus event_date=9999-12-31."""
    decrypt = record("real", "2024-05-08T10:00:00Z")
    doom = record("doom", "9999-12-31T23:59:59Z")
    deletion = record(
        "del-1",
        "2024-05-08T10:05:00Z",
        "ScheduleKeyDeletion",
        readOnly=False,
        requestParameters={"keyId": KEY_ARN, "pendingWindowInDays": 7},
    )
    rows = [events.row_of(events.decode_record(json.dumps(r).encode()), "old") for r in (decrypt, deletion, doom)]
    table = pa.Table.from_batches([events.rows_to_batch(rows)])
    for day in sorted(set(table.column("event_date").to_pylist())):
        folder = lakelib.partition_dir(lake, day)
        folder.mkdir(parents=True, exist_ok=True)
        part = table.filter(pa.compute.equal(table.column("event_date"), pa.scalar(day, pa.date32())))
        pq.write_table(part.drop(["event_date"]), folder / "old-000.parquet")
    assert lakelib.partitions(lake) == [DAY, dt.date(9999, 12, 31)]
    return lake


def test_sql_reads_a_poisoned_lake_and_warns_about_the_partition_it_skips(
    poisoned_lake: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.engine"):
        code, out, err, exception = keytrail(
            "sql", "--lake", str(poisoned_lake), "--format", "json", "SELECT event_id FROM events ORDER BY 1"
        )
    assert exception is None or isinstance(exception, SystemExit), exception
    assert code == 0, err
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == ["del-1", "real"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("event_date=9999-12-31" in message and "skipping" in message for message in warned), warned
    flagged = keytrail(
        "sql",
        "--lake",
        str(poisoned_lake),
        "--since",
        "2024-05-01",
        "--until",
        "2024-06-01",
        "SELECT count(*) AS n FROM events",
    )
    assert flagged[0] == 0, flagged[2]


def test_query_show_and_run_work_on_a_poisoned_lake(poisoned_lake: Path) -> None:
    code, out, err, exception = keytrail("query", "show", "key_usage", "--lake", str(poisoned_lake))
    assert exception is None or isinstance(exception, SystemExit), exception
    assert code == 0, err
    assert "--param since=2024-05-07T11:00:00Z" in out  # the example comes from the lake's last readable day
    table = investigate.investigate(
        poisoned_lake,
        "key_usage",
        {"key": KEY_ARN, "since": "2024-05-08", "until": "2024-05-09"},
        now=dt.datetime(2024, 5, 9, tzinfo=dt.UTC),
    )
    assert table.num_rows > 0


def test_detections_run_on_a_poisoned_lake(poisoned_lake: Path) -> None:
    since = dt.datetime(2024, 5, 8, 10, tzinfo=dt.UTC)
    with Engine.for_lake(poisoned_lake, since, since + dt.timedelta(hours=1)) as engine:
        assert engine.history_start == dt.datetime(2024, 5, 8, tzinfo=dt.UTC)  # not year 9999
    alerts = run_detections(poisoned_lake, since, since + dt.timedelta(hours=1))
    assert "kms_key_deletion_or_disable" in {alert.detection_id for alert in alerts}


# --- time flags: one line and exit 2 ------------------------------------------------------------------------------


@pytest.fixture
def small_lake(tmp_path: Path, lake: Path) -> Path:
    trail_with(tmp_path / "trail", [record("e1", "2024-05-08T10:00:00Z")])
    ingest.ingest(str(tmp_path / "trail"), lake)
    return lake


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sql", "--since", "2024-06-01", "--until", "2024-05-01", "select 1"], "must be before"),
        (["sql", "--since", "-99999999d", "select 1"], "is not a time"),
        (["sql", "--since", "0001-01-01", "select 1"], "is outside"),
        (["sql", "--since", "2024-06-01", "select 1"], "the lake's days, 2024-05-08 .. 2024-05-08"),
        (["query", "run", "key_usage", "--param", "key=x", "--since", "0001-01-01"], "is outside"),
        (["query", "run", "key_usage", "--param", "key=x", "--since", "-99999999d"], "is not a time"),
        (
            ["query", "run", "key_usage", "--param", "key=x", "--since", "2024-06-01", "--until", "2024-05-01"],
            "must be before",
        ),
        (["detect", "--since", "0001-01-01"], "is outside"),
        (["detect", "--until", "0001-01-01T00:00:00Z"], "is outside"),
        (["detect", "--since", "9999-12-31T00:00:00Z", "--until", "9999-12-31T23:00:00Z"], "is outside"),
        (["detect", "--since", "2024-06-01T00:00:00Z", "--until", "2024-05-01T00:00:00Z"], "must be before"),
        (["report", "--since", "0001-01-01"], "is outside"),
        (["report", "--since", "-99999999d"], "is not a time"),
        (["report", "--since", "2024-06-01", "--until", "2024-05-01"], "must be before"),
    ],
)
def test_bad_time_flags_are_usage_errors(small_lake: Path, tmp_path: Path, args: list[str], message: str) -> None:
    extra = ["--out", str(tmp_path / "r.html")] if args[0] == "report" else []
    code, _, err, exception = keytrail(*args, *extra, "--lake", str(small_lake))
    assert_one_line_error(code, err, exception, 2)
    assert message in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "0001-01-01"], "--since 0001-01-01 is outside"),
        (["--until", "9999-12-31"], "--until 9999-12-31 is outside"),
        (["--since", "2024-06-01", "--until", "2024-05-01"], "is after --until"),
    ],
)
def test_bad_ingest_day_flags_are_usage_errors(tmp_path: Path, lake: Path, flags: list[str], message: str) -> None:
    trail_with(tmp_path / "trail", [record("e1", "2024-05-08T10:00:00Z")])
    code, _, err, exception = keytrail("ingest", str(tmp_path / "trail"), "--lake", str(lake), *flags)
    assert_one_line_error(code, err, exception, 2)
    assert message in err
    assert lakelib.partitions(lake) == []


# --- the SQL sandbox ------------------------------------------------------------------------------------------


def test_sql_cannot_read_duckdbs_default_temp_directory(
    small_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB whitelists its temp directory (`.tmp` in the working directory unless set) whatever
    allowed_directories says."""
    work = tmp_path / "cwd"
    (work / ".tmp").mkdir(parents=True)
    (work / ".tmp" / "secret.csv").write_text("token\nhunter2\n")
    monkeypatch.chdir(work)
    for path in (".tmp/secret.csv", str(work / ".tmp" / "secret.csv")):
        code, out, err, exception = keytrail("sql", "--lake", str(small_lake), f"select * from read_csv('{path}')")
        assert_one_line_error(code, err, exception, 2)
        assert "refused" in err and "hunter2" not in out + err
    # the lake itself is still served
    code, out, err, _ = keytrail("sql", "--lake", str(small_lake), "--format", "json", "select event_id from events")
    assert code == 0 and json.loads(out) == {"event_id": "e1"}, err


def test_the_session_spills_to_a_private_directory_removed_on_close(small_lake: Path) -> None:
    since = dt.datetime(2024, 5, 8, tzinfo=dt.UTC)
    with Engine.for_lake(small_lake, since, since + dt.timedelta(days=1)) as engine:
        spill = Path(engine.sql("SELECT current_setting('temp_directory') AS d").column("d")[0].as_py())
        spill_dir = spill.parent
        assert spill.is_absolute() and spill_dir.is_dir() and spill_dir.stat().st_mode & 0o077 == 0  # only this user
        assert not spill.is_relative_to(Path.cwd())
    assert not spill_dir.exists()


@pytest.mark.parametrize(
    ("fmt", "sql"),
    [
        ("csv", "select * from read_blob('{events}/*/*.parquet')"),  # bytes that are not UTF-8
        ("table", "select 'infinity'::timestamp AS t"),  # no Python datetime for it
        ("json", "select 'infinity'::date AS d"),
    ],
)
def test_result_values_a_format_cannot_hold_are_one_line_errors(small_lake: Path, fmt: str, sql: str) -> None:
    query = sql.format(events=lakelib.events_dir(small_lake))
    code, _, err, exception = keytrail("sql", "--lake", str(small_lake), "--format", fmt, query)
    assert_one_line_error(code, err, exception, 1)
    assert f"cannot write the result as {fmt}" in err


def test_query_run_shows_an_unwritable_result_as_one_line(small_lake: Path, tmp_path: Path) -> None:
    folder = tmp_path / "queries" / "investigations"
    folder.mkdir(parents=True)
    (folder / "blob.sql").write_text(
        "-- Why: a result CSV cannot hold.\n"
        "SELECT event_id, '\\xFF'::BLOB AS raw FROM events WHERE event_time >= $since AND event_time < $until\n"
    )
    (folder / "blob.yml").write_text(
        "id: blob\ntitle: Blob\ndescription: A binary column.\nparams: {}\nnext_steps: [none]\nexample: {}\n"
        "tests:\n  - name: empty\n    now: 2024-05-09T00:00:00Z\n    events: []\n    expect: []\n"
    )
    window = ["--since", "2024-05-08", "--until", "2024-05-09"]
    args = ["query", "run", "blob", *window, "--queries", str(tmp_path / "queries"), "--lake", str(small_lake)]
    ok = keytrail(*args, "--format", "json")
    assert ok[0] == 0 and json.loads(ok[1])["event_id"] == "e1", ok[2]
    code, _, err, exception = keytrail(*args, "--format", "csv")
    assert_one_line_error(code, err, exception, 1)
    assert "cannot write the result as csv" in err
