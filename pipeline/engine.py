"""A locked DuckDB session over the lake: `events` and `hourly` are views the engine defines itself, values bind
as `$name`.

`events` holds the committed events of the partitions a window needs, `hourly` their hourly rollups
(pipeline/lake/rollups.py, rows of any batching: detections sum and union them by their own grouping). Detections
read their lookback from `hourly`, choose from it which of the window's buckets could fire, and read raw `events`
only for those candidates, so a run's cost follows the window's rollups: neither the history nor the raw volume.
The session whitelists only the lake's events and rollups directories, then disables external access and locks
the configuration, so ad-hoc SQL can read the lake and nothing else. Only read statements
(SELECT, EXPLAIN) are accepted: DuckDB would otherwise allow `COPY ... TO` inside the whitelisted directory.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from pipeline.catalog import BUILTINS, Query, coerce
from pipeline.duckdb_session import close_session, open_session
from pipeline.events import COLUMNS, EVENTS_SCHEMA
from pipeline.lake import committed_files, events_dir, partition_dir, partitions, rollups_dir
from pipeline.lake import rollups as lake_rollups
from pipeline.lake.integrity import INTEGRITY_SCHEMA, integrity_dir, integrity_files, integrity_table
from pipeline.lake.layout import partition_day
from pipeline.lake.ledger import committed_rollup_files
from pipeline.times import EARLIEST, LATEST, check_window, display, utc

if TYPE_CHECKING:  # polars costs ~0.3 s to import; only notebooks ask for DataFrames
    import polars as pl

log = logging.getLogger(__name__)

# A day before the lookback is read too: "the same time of day on each day of the lookback" reaches a few hours
# before its start (kms_decrypt_volume_spike's sustained stretch), and the window's bucket may start before since.
LOOKBACK_SLACK = dt.timedelta(days=1)

_READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


class QueryRefused(ValueError):
    """The SQL is not a read-only statement over `events`."""


class Engine:
    """One DuckDB connection (never the module default) with `events` defined and the session locked.

    Build it with `Engine.for_lake(...)` or `Engine.from_table(...)`; use it as a context manager.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        since: dt.datetime | None,
        until: dt.datetime | None,
        files: Sequence[Path] = (),
        history_start: dt.datetime | None = None,
        spill_dir: Path | None = None,
    ) -> None:
        self._con = con
        self._spill_dir = spill_dir
        self.since = since
        self.until = until
        self.files = tuple(files)
        # Where the data starts (the lake's first partition): baselines before it are unknown, not empty.
        self.history_start = history_start
        self._seen_accounts: tuple[str, ...] | None = None

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def for_lake(
        cls,
        lake: Path | str,
        since: dt.datetime,
        until: dt.datetime,
        *,
        lookback: dt.timedelta = dt.timedelta(0),
    ) -> Engine:
        """`events` = the committed files of the partitions covering [since - lookback - a day, until); `hourly` =
        their rollups.

        The window must lie inside times.EARLIEST .. LATEST (ValueError otherwise); partitions outside that span
        (a lake written before ingest rejected such records) are never read.
        """
        since, until = utc(since), utc(until)
        check_window(since, until)
        lake = Path(lake).resolve()
        slack = LOOKBACK_SLACK if lookback else dt.timedelta(0)
        start = max(since - lookback - slack, EARLIEST).date()
        end = (until - dt.timedelta(microseconds=1)).date()  # until is exclusive
        files = committed_files(lake, start, end)
        con, spill_dir = open_session()
        if files:
            relation = con.read_parquet([str(f) for f in files], hive_partitioning=True)
            relation.select(*COLUMNS).create_view("events")
        else:
            _empty_events(con)
        _hourly_view(con, files, committed_rollup_files(lake, start, end))
        # What `keytrail verify` recorded for the same days (the trail_integrity_failure detection reads it).
        checked = integrity_files(lake, start, end)
        if checked:
            relation = con.read_parquet([str(f) for f in checked], hive_partitioning=True)  # period_date: DATE
            relation.select(*INTEGRITY_SCHEMA.names).create_view("integrity")
        else:
            _create_table(con, "integrity", INTEGRITY_SCHEMA.empty_table())
        _lock(con, [events_dir(lake), rollups_dir(lake), integrity_dir(lake)])
        log.debug("events view over %d files for %s..%s", len(files), start, end)
        days = readable_partitions(lake)
        history_start = dt.datetime.combine(min(days), dt.time(), dt.UTC) if days else None
        return cls(con, since=since, until=until, files=files, history_start=history_start, spill_dir=spill_dir)

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        history_start: dt.datetime | None = None,
        integrity: Sequence[Mapping[str, Any]] = (),
    ) -> Engine:
        """An in-memory `events` table (EVENTS_SCHEMA) under the same lock: for YAML cases and notebooks.
        `integrity` rows (YAML cases' `integrity:`) fill the `integrity` table.

        `history_start` defaults to the first event's time: the table is all the history there is.
        """
        con, spill_dir = open_session()
        _create_table(con, "events", table.select(list(COLUMNS)).cast(EVENTS_SCHEMA))
        _create_table(con, "hourly", lake_rollups.hourly(table))
        _create_table(con, "integrity", integrity_table(integrity))
        _lock(con, [])
        if history_start is None:
            ((history_start,),) = con.execute("SELECT min(event_time) FROM events").fetchall()
        return cls(
            con,
            since=utc(since) if since else None,
            until=utc(until) if until else None,
            history_start=utc(history_start) if history_start else None,
            spill_dir=spill_dir,
        )

    # --- running --------------------------------------------------------------------------------------------

    def bind(self, query: Query, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The exact values bound for `query`: declared params (defaults + overrides) plus the built-ins it uses.

        Built-ins may be overridden in `params` (`since`, `until`, `trusted_accounts`); the rest derive from them.
        """
        params = dict(params or {})
        builtin = {name: params.pop(name) for name in list(params) if name in BUILTINS}
        values: dict[str, Any] = query.resolve_params(params)
        since = coerce("timestamp", builtin["since"], where="since") if "since" in builtin else self.since
        until = coerce("timestamp", builtin["until"], where="until") if "until" in builtin else self.until
        uses = query.sql_names & BUILTINS
        if uses & {"since", "until", "baseline_start"} and (since is None or until is None):
            raise ValueError(f"{query.id} needs a window: pass since/until")
        trusted = builtin.get("trusted_accounts")
        builtins: dict[str, Any] = {
            "since": since,
            "until": until,
            "baseline_start": since - query.lookback if since is not None else None,
            "lookback": query.lookback,
            "window": query.window or (until - since if since and until else None),
            "history_start": (
                coerce("timestamp", builtin["history_start"], where="history_start")
                if "history_start" in builtin
                else self.history_start or since
            ),
        }
        for name in uses:
            if name == "trusted_accounts":
                values[name] = coerce("list[str]", trusted, where=name) if trusted else list(self.seen_accounts())
            else:
                values[name] = builtins[name]
        return values

    def run(self, query: Query, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a catalog query with bound, type-coerced values; returns an Arrow table."""
        return self._relation(query.sql, self.bind(query, params)).to_arrow_table()

    def run_pl(self, query: Query, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
        """`run` as a polars DataFrame (notebooks)."""
        return self._relation(query.sql, self.bind(query, params)).pl()

    def sql(self, text: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Ad-hoc read-only SQL over `events` (values still bind as `$name`)."""
        return self._relation(text, dict(params or {})).to_arrow_table()

    def seen_accounts(self) -> tuple[str, ...]:
        """Accounts seen as recipientAccountId in the session's events: the default trusted set (read from their
        hourly rollups, which name the same accounts at a fraction of the rows)."""
        if self._seen_accounts is None:
            rows = self._con.sql(
                "SELECT DISTINCT recipient_account_id FROM hourly WHERE recipient_account_id IS NOT NULL ORDER BY 1"
            ).fetchall()
            self._seen_accounts = tuple(row[0] for row in rows)
        return self._seen_accounts

    def _relation(self, text: str, values: dict[str, Any]) -> duckdb.DuckDBPyRelation:
        try:
            statements = self._con.extract_statements(text)
        except duckdb.Error as exc:
            raise QueryRefused(f"cannot parse SQL: {exc}") from None
        if len(statements) != 1:
            raise QueryRefused(f"expected exactly one statement, got {len(statements)}")
        if statements[0].type not in _READ_STATEMENTS:
            raise QueryRefused(f"only read-only SELECT statements run here, not {statements[0].type.name}")
        return self._con.sql(text, params=values or None)

    # --- lifetime -------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._spill_dir is None:
            self._con.close()
        else:
            close_session(self._con, self._spill_dir)
            self._spill_dir = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def readable_partitions(lake: Path) -> list[dt.date]:
    """The lake's partition days that readers use: those inside times.EARLIEST .. LATEST.

    Ingest rejects records outside that span, but a lake written before it did may hold, say, event_date=9999-12-31:
    every reader doing date arithmetic on it would overflow, so it is skipped (with a warning saying where it is).
    """
    readable = []
    for day in partitions(lake):
        if EARLIEST.date() <= day < LATEST.date():
            readable.append(day)
            continue
        folder = partition_dir(Path(lake).resolve(), day)
        if folder not in _skipped:  # once per process: a command or a served flow opens many sessions
            _skipped.add(folder)
            log.warning(
                "skipping %s: outside %s .. %s, no reader can use it (move it out of the lake)",
                folder,
                display(EARLIEST),
                display(LATEST),
            )
    return readable


_skipped: set[Path] = set()


def _empty_events(con: duckdb.DuckDBPyConnection) -> None:
    _create_table(con, "events", EVENTS_SCHEMA.empty_table())


def _create_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """`name` as a table holding `table` (names are the engine's own: `events`, `hourly`, `integrity`)."""
    con.from_arrow(table).create(name)


def _hourly_view(con: duckdb.DuckDBPyConnection, event_files: Sequence[Path], rollup_files: Sequence[Path]) -> None:
    """`hourly`: the committed rollup files, plus the rollup of any day whose events have none (a lake written
    before rollups existed), computed here from its events with a warning to rebuild them once."""
    covered = {partition_day(path.parent.name) for path in rollup_files}
    uncovered = [path for path in event_files if partition_day(path.parent.name) not in covered]
    computed = lake_rollups.ROLLUP_SCHEMA.empty_table()
    if uncovered:
        day_events = con.read_parquet([str(f) for f in uncovered], hive_partitioning=True).select(*COLUMNS)
        computed = lake_rollups.hourly(day_events.to_arrow_table())
        days = sorted({partition_day(path.parent.name) for path in uncovered}, key=str)
        log.warning(
            "no hourly rollups for %d day(s) from %s: computed from their events for this run; "
            "run `keytrail rollups rebuild` once to store them",
            len(days),
            days[0],
        )
    _create_table(con, "_hourly_computed", computed)
    columns = lake_rollups.ROLLUP_SCHEMA.names
    relation = con.table("_hourly_computed")
    if rollup_files:
        stored = con.read_parquet([str(f) for f in rollup_files], hive_partitioning=False).select(*columns)
        relation = stored.union(relation.select(*columns))
    relation.create_view("hourly")


def _lock(con: duckdb.DuckDBPyConnection, allowed: Sequence[Path]) -> None:
    """Whitelist `allowed` directories, then cut off every other file/network access and freeze the settings."""
    con.execute("SET allowed_directories = $dirs", {"dirs": [str(p) + "/" for p in allowed]})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
