"""engine: the locked DuckDB session, the partition-pruned `events` view, $name binding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import catalog, events
from pipeline.engine import Engine, QueryRefused

UTC = dt.UTC


def _decrypt(event_id: str, when: str, account: str = "111122223333") -> dict[str, object]:
    return {
        "eventID": event_id,
        "eventTime": when,
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": "us-east-1",
        "recipientAccountId": account,
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{account}:user/alice", "accountId": account},
        "requestParameters": {"encryptionContext": {"tenant": "acme"}},
    }


def _write_partitioned(lake: Path, table: pa.Table) -> None:
    """The documented layout, written with plain pyarrow: events/event_date=YYYY-MM-DD/<file>.parquet."""
    for day in sorted(set(table.column("event_date").to_pylist())):
        part = table.filter(pa.compute.equal(table.column("event_date"), pa.scalar(day, pa.date32())))
        folder = lake / "events" / f"event_date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(part.drop(["event_date"]), folder / "batch-0001.parquet", compression="zstd")


@pytest.fixture
def three_day_lake(lake: Path) -> Path:
    records = [
        _decrypt("e1", "2024-05-01T23:59:59Z"),
        _decrypt("e2", "2024-05-02T10:00:00Z"),
        _decrypt("e3", "2024-05-03T10:00:00Z", account="444455556666"),
    ]
    _write_partitioned(lake, events.normalize_many(records))
    return lake


def _query(tmp_path: Path, sql: str, params_yaml: str = "{}", example: str = "{}") -> catalog.Query:
    folder = tmp_path / "queries" / "investigations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q.sql").write_text("-- Why: engine test.\n" + sql)
    (folder / "q.yml").write_text(
        f"id: q\ntitle: Q\ndescription: Test query.\nparams: {params_yaml}\nnext_steps: [none]\nexample: {example}\n"
        "tests:\n  - name: empty\n    now: 2024-05-02T00:00:00Z\n    events: []\n    expect: []\n"
    )
    return catalog.load_pair(folder / "q.sql", kind="investigations")


def test_view_reads_only_the_partitions_of_window_plus_lookback(three_day_lake: Path) -> None:
    since, until = dt.datetime(2024, 5, 2, 9, tzinfo=UTC), dt.datetime(2024, 5, 3, tzinfo=UTC)
    with Engine.for_lake(three_day_lake, since, until) as engine:
        # until is exclusive: 2024-05-03 00:00 does not need the 05-03 partition
        assert [f.parent.name for f in engine.files] == ["event_date=2024-05-02"]
        assert engine.sql("SELECT event_id FROM events").column("event_id").to_pylist() == ["e2"]
    with Engine.for_lake(three_day_lake, since, until, lookback=dt.timedelta(hours=10)) as engine:
        assert [f.parent.name for f in engine.files] == ["event_date=2024-05-01", "event_date=2024-05-02"]
        table = engine.sql("SELECT * FROM events ORDER BY event_id")
        assert table.column_names == list(events.COLUMNS)
        assert table.column("event_date").to_pylist() == [dt.date(2024, 5, 1), dt.date(2024, 5, 2)]
        assert table.column("encryption_context").to_pylist()[0] == [("tenant", "acme")]


def test_empty_window_still_has_the_events_schema(three_day_lake: Path) -> None:
    since = dt.datetime(2030, 1, 1, tzinfo=UTC)
    with Engine.for_lake(three_day_lake, since, since + dt.timedelta(hours=1)) as engine:
        assert engine.files == ()
        table = engine.sql("SELECT * FROM events")
        assert table.num_rows == 0 and table.column_names == list(events.COLUMNS)
        assert engine.seen_accounts() == ()


def test_missing_lake_is_an_empty_window(tmp_path: Path) -> None:
    since = dt.datetime(2024, 5, 2, tzinfo=UTC)
    with Engine.for_lake(tmp_path / "nothing-here", since, since + dt.timedelta(hours=1)) as engine:
        assert engine.sql("SELECT count(*) AS n FROM events").column("n").to_pylist() == [0]


def test_window_must_be_ordered(three_day_lake: Path) -> None:
    moment = dt.datetime(2024, 5, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="must be before"):
        Engine.for_lake(three_day_lake, moment, moment)


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        # reads outside the lake: DuckDB's own sandbox refuses them
        ("SELECT * FROM read_csv('/etc/passwd')", duckdb.PermissionException),
        ("SELECT * FROM read_text('/etc/passwd')", duckdb.PermissionException),
        ("SELECT * FROM read_parquet('s3://bucket/key.parquet')", duckdb.PermissionException),
        # anything but one read statement: refused before DuckDB sees it (COPY into the lake would pass the sandbox)
        ("COPY (SELECT * FROM events) TO '{events_dir}/event_date=2024-05-02/evil.parquet'", QueryRefused),
        ("COPY (SELECT 1) TO '/tmp/keytrail-escape.csv'", QueryRefused),
        ("SET enable_external_access = true", QueryRefused),
        ("SET allowed_directories = ['/']", QueryRefused),
        ("CREATE TABLE t AS SELECT 1", QueryRefused),
        ("ATTACH '/tmp/keytrail-escape.db'", QueryRefused),
        ("SELECT 1; SELECT 2", QueryRefused),
    ],
)
def test_only_reads_of_the_lake_run(three_day_lake: Path, sql: str, refusal: type[Exception]) -> None:
    since = dt.datetime(2024, 5, 2, tzinfo=UTC)
    with Engine.for_lake(three_day_lake, since, since + dt.timedelta(days=1)) as engine:
        with pytest.raises(refusal):
            engine.sql(sql.format(events_dir=three_day_lake / "events"))
        assert engine.sql("SELECT count(*) AS n FROM events").column("n").to_pylist() == [1]  # still served
    assert not (three_day_lake / "events" / "event_date=2024-05-02" / "evil.parquet").exists()


def test_duckdbs_own_temp_directory_is_not_a_way_out(
    three_day_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB whitelists its temp directory (`.tmp` in the working directory by default) beside
    allowed_directories: each session gets a private one instead."""
    (tmp_path / "cwd" / ".tmp").mkdir(parents=True)
    (tmp_path / "cwd" / ".tmp" / "secret.csv").write_text("token\nhunter2\n")
    monkeypatch.chdir(tmp_path / "cwd")
    since = dt.datetime(2024, 5, 2, tzinfo=UTC)
    sessions = (
        Engine.for_lake(three_day_lake, since, since + dt.timedelta(days=1)),
        Engine.from_table(events.normalize_many([_decrypt("a", "2024-05-01T09:30:00Z")])),
    )
    for session in sessions:
        with session as engine:
            for path in (".tmp/secret.csv", str(tmp_path / "cwd" / ".tmp" / "secret.csv")):
                with pytest.raises(duckdb.PermissionException):
                    engine.sql(f"SELECT * FROM read_csv('{path}')")
            assert engine.sql("SELECT count(*) AS n FROM events").column("n").to_pylist() == [1]


def test_a_window_outside_the_lakes_span_is_refused(three_day_lake: Path) -> None:
    for since, until in (
        (dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(2024, 5, 2, tzinfo=UTC)),
        (dt.datetime(2024, 5, 2, tzinfo=UTC), dt.datetime(9999, 12, 31, tzinfo=UTC)),
    ):
        with pytest.raises(ValueError, match="is outside 2013-01-01"):
            Engine.for_lake(three_day_lake, since, until, lookback=dt.timedelta(days=7))


def test_settings_are_locked_even_for_the_engine_itself(three_day_lake: Path) -> None:
    """Even bypassing the read-only gate, DuckDB itself refuses SET and file access after the lock."""
    since = dt.datetime(2024, 5, 2, tzinfo=UTC)
    with Engine.for_lake(three_day_lake, since, since + dt.timedelta(days=1)) as engine:
        con = engine._con
        with pytest.raises(duckdb.InvalidInputException, match="lock"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.PermissionException):
            con.execute("COPY (SELECT 1) TO '/tmp/keytrail-escape.csv'")
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)


def test_values_bind_as_values_never_as_sql(three_day_lake: Path, tmp_path: Path) -> None:
    query = _query(
        tmp_path,
        "SELECT event_id FROM events WHERE principal_arn = $who AND event_time >= $since AND event_time < $until",
        "{who: {type: str, required: true, help: Principal.}}",
        example="{who: x}",
    )
    since = dt.datetime(2024, 5, 1, tzinfo=UTC)
    with Engine.for_lake(three_day_lake, since, since + dt.timedelta(days=3)) as engine:
        hostile = "x' OR '1'='1"
        assert engine.run(query, {"who": hostile}).num_rows == 0
        alice = "arn:aws:iam::111122223333:user/alice"
        assert sorted(engine.run(query, {"who": alice}).column("event_id").to_pylist()) == ["e1", "e2"]
        # built-ins can be narrowed per run, and are coerced from text
        narrowed = engine.run(query, {"who": alice, "since": "2024-05-02T00:00:00Z"})
        assert narrowed.column("event_id").to_pylist() == ["e2"]
        frame = engine.run_pl(query, {"who": alice})
        assert isinstance(frame, pl.DataFrame) and frame.height == 2


def test_builtins_bound_for_a_detection(tmp_path: Path) -> None:
    from tests.test_catalog import SQL, write_pair  # the same tiny detection the catalog tests use

    sql = SQL.replace("SELECT principal_arn,", "SELECT principal_arn, $baseline_start AS b, $window AS w,")
    sql = sql.replace(
        "GROUP BY principal_arn", "AND list_contains($trusted_accounts, recipient_account_id)\nGROUP BY principal_arn"
    )
    query = catalog.load_pair(write_pair(tmp_path, sql=sql), kind="detections")
    table = events.normalize_many([_decrypt("a", "2024-05-01T09:30:00Z"), _decrypt("b", "2024-05-01T09:40:00Z")])
    since, until = dt.datetime(2024, 5, 1, 9, tzinfo=UTC), dt.datetime(2024, 5, 1, 10, tzinfo=UTC)
    with Engine.from_table(table, since=since, until=until) as engine:
        values = engine.bind(query, {"min_events": 2})
        assert values["baseline_start"] == since - dt.timedelta(days=1)
        assert values["window"] == dt.timedelta(hours=1)
        assert values["trusted_accounts"] == ["111122223333"]  # default: the recipient accounts seen
        assert engine.run(query, {"min_events": 2}).column("event_count").to_pylist() == [2]
        assert engine.run(query, {"min_events": 3}).num_rows == 0
        with pytest.raises(ValueError, match=r"tiny\.key_ref: expected a string"):
            engine.run(query, {"key_ref": None})
        assert engine.bind(query, {"trusted_accounts": ["999"]})["trusted_accounts"] == ["999"]


def test_from_table_session_is_locked_too() -> None:
    engine = Engine.from_table(events.normalize_many([_decrypt("a", "2024-05-01T09:30:00Z")]))
    with engine:
        with pytest.raises(duckdb.PermissionException):
            engine.sql("SELECT * FROM read_csv('/etc/passwd')")
        assert engine.sql("SELECT hour(event_time) AS h FROM events").column("h").to_pylist() == [9]
