"""Detections over history: a scheduled run (whole catalog, 1-hour window, 7-day lookback) and a 30-day backtest.

    uv run python bench/detect.py                # >= 10,000,000 KMS/Secrets Manager events over 30 days (cached)
    uv run python bench/detect.py --quick        # 300,000 events: a quick look
    uv run python bench/detect.py --volume-x10   # also a 10-day lake with 10x the events per day (a long build)
    uv run python bench/detect.py --repeat 7

Builds (once, cached under bench/.data) a simulated KMS-only trail of 90 days; the 30-day lake ingests its last
30 days, the 90-day lake is that lake (hard links) extended with the 60 older days, so both lakes hold the same
window and lookback and differ only in history the run must not read. With --volume-x10, a second trail of 10
days ending on the same day with 10x the events per day gives the 10x lake. Each measurement is a child process
(see _harness.py) timing `pipeline.detect.run_detections` several times (median reported): the scheduled hour on
each lake, and the backtest (what `keytrail backtest` calls: the whole catalog over all 30 days of the 30-day
lake, every bucket judged against its own lookback). The past days of every lake are compacted first (one
sorted file a day, as the served `keytrail-compact` deployment keeps them; `--as-ingested` leaves the files bulk
ingest wrote). The peer is DuckDB on the raw CloudTrail JSON of the
window + lookback days: the same detection SQL over an `events` table loaded with read_json_objects +
json_transform.
Targets (issue "Detections over history"): scheduled run < 1.5 s on 2 cores on the 30-day lake, the 10x lake
at most 1.5x that time, the 30-day backtest < 60 s; kept from issue 3: the 90-day time within 15% of the
30-day time.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # bench/ is not a package: the scripts run by path

SEED = 2024
START = dt.date(2024, 5, 1)  # the 30-day trail: START .. START + 29 days; the window is on its last day
DAYS = 30
OLDER_DAYS = 60  # the 90-day lake adds these before START
WINDOW_HOUR = 12
LOOKBACK_DAYS = 7
VOLUME_DAYS = 10  # the 10x lake: window + lookback + margin
VOLUME_FACTOR = 10
TARGET_SECONDS = 1.5
TARGET_GROWTH = 0.15  # issue 3: the 90-day lake within 15% of the 30-day lake
TARGET_VOLUME_RATIO = 1.5  # the 10x lake at most 1.5x the 30-day lake
TARGET_BACKTEST_SECONDS = 60.0


def window(days: int = DAYS) -> tuple[dt.datetime, dt.datetime]:
    """The measured hour: on the last day of the `days`-day lake."""
    last_day = START + dt.timedelta(days=days - 1)
    since = dt.datetime.combine(last_day, dt.time(WINDOW_HOUR), tzinfo=dt.UTC)
    return since, since + dt.timedelta(hours=1)


# --- building the lakes (in the parent, with progress) --------------------------------------------------------


def backtest_span(days: int = DAYS) -> tuple[dt.datetime, dt.datetime]:
    """All the days of the `days`-day lake: what `keytrail backtest --since -30d` covers on it."""
    since = dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC)
    return since, since + dt.timedelta(days=days)


def load_average() -> str:
    """The 1/5/15-minute load average (the machine is shared: the figures move with it)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _simulate(out: Path, *, days: int, start: dt.date, per_day: int) -> dict[str, Any]:
    from pipeline.simulate import ALL_INCIDENTS

    result = h.simulate(
        out, days=days, seed=SEED, start=start, events_per_day=per_day, kms_only=True, incidents=ALL_INCIDENTS
    )
    return {"events": result.events, "files": result.files}


def _ingest(trail: Path, lake: Path, **window: dt.date) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TimeRemainingColumn

    from pipeline.ingest import ingest

    with Progress(*Progress.get_default_columns(), BarColumn(), TimeRemainingColumn(), console=h.console) as bar:
        task = bar.add_task(f"ingesting into {lake.parent.name}", total=None)

        def progress(done: int, total: int, read: int, total_bytes: int) -> None:
            bar.update(task, completed=read, total=total_bytes)

        report = ingest(str(trail), lake, workers=os.cpu_count() or 1, progress=progress, **window)
    return {"kept": report.events_kept, "seconds": round(report.seconds, 1)}


def build_lakes(data: Path, events: int, days: int, older: int) -> tuple[Path, Path, Path, dict[str, Any]]:
    """One trail of older + days days; the small lake holds its last `days` days, the big one all of it (cached).

    The trail ends on START + days - 1; `events` is the small lake's size."""
    per_day = math.ceil(events / days)
    first = START - dt.timedelta(days=older)
    span = "" if (days, older) == (DAYS, OLDER_DAYS) else f"-{days}+{older}d"
    root = data / f"detect-{events}{span}"
    params: dict[str, Any] = {"events": events, "seed": SEED, "start": first.isoformat(), "days": older + days}
    trail = h.cached(
        root / "trail",
        params,
        lambda folder: _simulate(folder, days=older + days, start=first, per_day=per_day),
    )
    params["trail"] = trail
    lake30 = h.cached(root / "lake-30d", params, lambda folder: _ingest(root / "trail", folder / "lake", since=START))

    def build90(folder: Path) -> dict[str, Any]:
        # The same 30 days (hard links: the lake never rewrites a file in place), then the 60 older days.
        subprocess.run(["cp", "-al", str(root / "lake-30d" / "lake"), str(folder / "lake")], check=True)
        return _ingest(root / "trail", folder / "lake", until=START - dt.timedelta(days=1))

    lake90 = h.cached(root / "lake-90d", {**params, "lake30": lake30}, build90)
    facts = {"trail": trail, "30d": lake30["kept"], "90d": lake30["kept"] + lake90["kept"]}
    return root / "trail", root / "lake-30d" / "lake", root / "lake-90d" / "lake", facts


def compact_history(lake: Path, last_day: dt.date) -> None:
    """Compact every partition before `last_day`, as the served `keytrail-compact` deployment keeps a lake (each
    past day one file sorted by event_time; the window's own day keeps its batch files). Idempotent: a day
    already in one file is left as it is."""
    from rich.progress import Progress

    from pipeline.lake import compaction, partitions

    days = [day for day in partitions(lake) if day < last_day]
    with Progress(console=h.console, transient=True) as bar:
        task = bar.add_task(f"compacting the past days of {lake.parent.name}", total=len(days))
        for day in days:
            compaction.compact(lake, day)
            bar.advance(task)


def build_volume_lake(data: Path, events: int, days: int) -> tuple[Path, dict[str, Any]]:
    """A trail of VOLUME_DAYS days ending on the small lake's last day, VOLUME_FACTOR x its events per day, all
    ingested (cached): the same window and lookback as the small lake, 10x the events in them."""
    per_day = VOLUME_FACTOR * math.ceil(events / days)
    first = START + dt.timedelta(days=days - VOLUME_DAYS)
    root = data / f"detect-{events}-{days}d-x{VOLUME_FACTOR}"
    params: dict[str, Any] = {"per_day": per_day, "seed": SEED, "start": first.isoformat(), "days": VOLUME_DAYS}
    trail = h.cached(
        root / "trail",
        params,
        lambda folder: _simulate(folder, days=VOLUME_DAYS, start=first, per_day=per_day),
    )
    lake = h.cached(root / "lake", {**params, "trail": trail}, lambda folder: _ingest(root / "trail", folder / "lake"))
    return root / "lake" / "lake", {"trail": trail, "kept": lake["kept"], "per_day": per_day}


# --- the stages (children) --------------------------------------------------------------------------------


def child_keytrail(lake: Path, since: dt.datetime, until: dt.datetime, repeat: int) -> dict[str, Any]:
    from pipeline.detect import run_detections

    times: list[float] = []
    result: dict[str, Any] = {}
    with h.timed_work(result):
        for _ in range(repeat):
            began = time.perf_counter()
            alerts = run_detections(lake, since, until)
            times.append(time.perf_counter() - began)
    result.update(times=times, findings=len(alerts))
    return result


def window_files(trail: Path, since: dt.datetime, until: dt.datetime) -> list[str]:
    """The trail's log files of the window and lookback days (what the peer must read)."""
    first = (since - dt.timedelta(days=LOOKBACK_DAYS)).date()
    days = {first + dt.timedelta(days=n) for n in range((until.date() - first).days + 1)}
    suffixes = {day.strftime("%Y/%m/%d") for day in days}
    found = []
    for folder, dirs, files in os.walk(trail):
        dirs.sort()
        if "/CloudTrail/" in folder + "/" and folder[-10:] in suffixes:
            found.extend(str(Path(folder, name)) for name in sorted(files) if name.endswith(".json.gz"))
    return found


def child_duckdb(trail: Path, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    from pipeline import catalog
    from pipeline.detect import alerts_from_rows, select_detections
    from pipeline.duckdb_session import open_session
    from pipeline.engine import Engine
    from pipeline.lake import rollups
    from pipeline.lake.integrity import INTEGRITY_SCHEMA

    files = window_files(trail, since, until)
    queries = select_detections(catalog.load("detections"))
    result: dict[str, Any] = {"files": len(files)}
    with h.timed_work(result):
        con, spill_dir = open_session()  # the engine's own session set-up (UTC, the detections' SQL macros), unlocked
        con.execute("SET preserve_insertion_order = false")  # ~2x less CPU and ~3x less memory for the load
        con.execute(f"CREATE TABLE events AS {h.EVENTS_FROM_JSON_SQL}", {"structure": h.JSON_STRUCTURE, "files": files})
        con.from_arrow(INTEGRITY_SCHEMA.empty_table()).create("integrity")  # raw JSON has no `keytrail verify` results
        # the baselines' hourly rollups, which the peer has to compute from the raw events itself
        con.from_arrow(rollups.hourly(con.sql("SELECT * FROM events").to_arrow_table())).create("hourly")
        loaded = time.perf_counter()
        with Engine(con, since=since, until=until, spill_dir=spill_dir) as engine:  # the engine only binds $params
            findings = sum(len(alerts_from_rows(query, engine.run(query).to_pylist())) for query in queries)
            result["query_seconds"] = time.perf_counter() - loaded
            result["events"] = engine.sql("SELECT count(*) AS n FROM events").column(0)[0].as_py()
    result["findings"] = findings
    return result


def _span(since: str, until: str) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(since), dt.datetime.fromisoformat(until)


STAGES = {
    "keytrail": lambda lake, since, until, repeat: child_keytrail(Path(lake), *_span(since, until), int(repeat)),
    "duckdb": lambda trail, since, until: child_duckdb(Path(trail), *_span(since, until)),
}


# --- the run ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = h.arguments(
        __doc__,
        "uv run python bench/detect.py --quick",
        events="events in the 30-day lake (default 10,000,000; --quick: 300,000)",
        quick="a 300,000-event lake: a quick look, not the figure",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of the scheduled hour per lake (median reported)")
    parser.add_argument("--backtest-repeat", type=int, default=1, help="runs of the 30-day backtest (median reported)")
    parser.add_argument("--days", type=int, default=DAYS, help="days in the small lake (the figure: 30)")
    parser.add_argument("--older-days", type=int, default=OLDER_DAYS, help="days the big lake adds (the figure: 60)")
    parser.add_argument(
        "--volume-x10",
        action="store_true",
        help=f"also build and time a {VOLUME_DAYS}-day lake with {VOLUME_FACTOR}x the events per day (long build)",
    )
    parser.add_argument(
        "--as-ingested",
        action="store_true",
        help="leave the lakes as bulk ingest wrote them (many files a day) instead of compacting the past days",
    )
    args = parser.parse_args()
    events = args.events or (300_000 if args.quick else 10_000_000)
    script = Path(__file__).resolve()

    trail, lake30, lake90, facts = build_lakes(args.data, events, args.days, args.older_days)
    volume = build_volume_lake(args.data, events, args.days) if args.volume_x10 else None
    since, until = window(args.days)
    if not args.as_ingested:
        for lake in (lake30, lake90, *([volume[0]] if volume else [])):
            compact_history(lake, since.date())
    span = [since.isoformat(), until.isoformat()]
    first, last = backtest_span(args.days)
    h.console.print(
        f"{args.days}-day lake: {facts['30d']:,} events; {args.days + args.older_days}-day lake: {facts['90d']:,} "
        "events (KMS-only simulated trail, "
        f"{facts['trail']['files']:,} files); window {since:%Y-%m-%d %H:%M}-{until:%H:%M} UTC, lookback "
        f"{LOOKBACK_DAYS} days; backtest {first:%Y-%m-%d}..{last:%Y-%m-%d} ({args.days} days) on the "
        f"{args.days}-day lake; {os.cpu_count()} CPUs"
    )
    if volume is not None:
        x10 = volume[1]
        h.console.print(
            f"{VOLUME_FACTOR}x lake: {x10['kept']:,} events over {VOLUME_DAYS} days ({x10['per_day']:,} a day, "
            f"{x10['trail']['files']:,} files)"
        )
    if args.prepare:
        return
    h.console.print(f"load average before: {load_average()}")
    measured = {}
    runs = [
        ("30-day lake", lake30, f"{args.days}-day lake"),
        ("90-day lake", lake90, f"{args.days + args.older_days}-day lake"),
    ]
    if volume is not None:
        runs.append(("10x lake", volume[0], f"{VOLUME_FACTOR}x-volume lake"))
    for key, lake, name in runs:
        with h.console.status(f"running the catalog on the {name} x{args.repeat} ..."):
            measured[key] = h.run_child(script, "keytrail", [str(lake), *span, str(args.repeat)], name)
    with h.console.status(f"backtest: the catalog over {args.days} days of the {args.days}-day lake ..."):
        measured["backtest"] = h.run_child(
            script,
            "keytrail",
            [str(lake30), first.isoformat(), last.isoformat(), str(args.backtest_repeat)],
            f"backtest, {args.days} days",
        )
    if not args.skip_duckdb:
        with h.console.status("running the catalog with DuckDB on the raw JSON ..."):
            measured["peer"] = h.run_child(script, "duckdb", [str(trail), *span], "DuckDB on raw JSON")
    h.console.print(f"load average after: {load_average()}")
    report(measured)


def report(measured: dict[str, h.Measured]) -> None:
    small, big_name = measured["30-day lake"].name, measured["90-day lake"].name
    rows = []
    medians: dict[str, float] = {}
    for key, m in measured.items():
        times = m.data.get("times", [m.wall])
        medians[key] = statistics.median(times)
        rows.append(
            [
                m.name,
                f"{medians[key]:.2f}",
                f"{min(times):.2f}-{max(times):.2f}",
                str(len(times)),
                f"{m.cpu / len(times):.2f}",
                h.mib(m.peak_rss),
                str(m.data["findings"]),
            ]
        )
    h.table(
        "whole catalog: the scheduled hour on each lake; the backtest",
        ["run", "median s", "range s", "runs", "CPU s/run", "peak RSS", "findings"],
        rows,
    )
    base, big = medians["30-day lake"], medians["90-day lake"]
    growth = big / base - 1
    under = f"< {TARGET_SECONDS} s"
    lines = [
        [f"{small}, median", f"{base:.2f} s", under, h.verdict(base < TARGET_SECONDS)],
        [f"{big_name}, median", f"{big:.2f} s", under, h.verdict(big < TARGET_SECONDS)],
        [
            f"{big_name} / {small}",
            f"{big / base:.2f} ({growth:+.0%})",
            f"within {TARGET_GROWTH:.0%}",
            h.verdict(growth <= TARGET_GROWTH),
        ],
    ]
    ratio = f"<= {TARGET_VOLUME_RATIO}x"
    if "10x lake" in measured:
        volume = medians["10x lake"] / base
        name = measured["10x lake"].name
        lines.append([f"{name} / {small}", f"{volume:.2f}x", ratio, h.verdict(volume <= TARGET_VOLUME_RATIO)])
    else:
        lines.append([f"{VOLUME_FACTOR}x-volume lake / {small}", "not measured (--volume-x10)", ratio, ""])
    backtest = measured["backtest"]
    lines.append(
        [
            f"{backtest.name}, {small}",
            f"{medians['backtest']:.1f} s",
            f"< {TARGET_BACKTEST_SECONDS:.0f} s",
            h.verdict(medians["backtest"] < TARGET_BACKTEST_SECONDS),
        ]
    )
    if "peer" in measured:
        peer = measured["peer"]
        lines.append(
            [
                f"DuckDB on raw JSON / keytrail ({small})",
                f"{medians['peer'] / base:.1f}x",
                f"{peer.data['files']:,} files, {peer.data['events']:,} events; "
                f"queries alone {peer.data['query_seconds']:.2f} s",
                "",
            ]
        )
    h.table("targets", ["figure", "value", "target", ""], lines)


if __name__ == "__main__":
    h.entry(main, STAGES)
