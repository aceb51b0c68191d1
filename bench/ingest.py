"""Ingest throughput: keytrail ingest against the floor and against DuckDB, on the same simulated files.

    uv run python bench/ingest.py                 # >= 1,000,000 events (simulated once, cached in bench/.data)
    uv run python bench/ingest.py --quick         # 50,000 events: a quick look
    uv run python bench/ingest.py --events 3000000

Stages (each in its own child process, see _harness.py), all over the same CloudTrail log files:
  (a) floor   read every file, gunzip with isal, split the Records array with msgspec: what any ingest pays
  (b) ingest  `pipeline.ingest.ingest` end to end into a fresh lake, workers=1 and workers=2
  (c) duckdb  the best SQL a user would script: read_json_objects + json_transform to a typed struct, unnest
              Records, keep the two event sources, project the lake's columns, COPY to partitioned Parquet
  (d) ingest  (b) with workers=1 without the hourly rollups (switched off in the measuring child only): what
              rollups cost at ingest, and the bytes of rollups/ against events/ in (b)'s lake
  (e) commit  one 200,000-event batch committed into an empty lake and into a 30,000,000-event lake (_commit.py)
Per-core figures are events (or uncompressed bytes) per CPU-second of the stage's whole process tree.
Targets (issue 2): (b) >= 40% of (a) per core, >= 2x (c) per core, peak RSS < 512 MB, near-linear 2-worker
speed-up. Rollups (issue "detections over history"): at most +15% CPU per event, at most 10% of the events'
bytes.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _commit
import _harness as h  # bench/ is not a package: the scripts run by path

EVENTS_PER_DAY = 200_000  # ~100 records per 5-minute file on average (median ~40): a busy organization trail
SEED = 2024
START = dt.date(2024, 5, 1)
TARGET_FLOOR_SHARE = 0.40
TARGET_VS_DUCKDB = 2.0
TARGET_RSS = 512 * 2**20
TARGET_SPEEDUP = 1.8  # of 2.0 on 2 workers: "near-linear"
TARGET_ROLLUP_CPU = 0.15  # extra CPU per event for maintaining the hourly rollups at commit
TARGET_ROLLUP_BYTES = 0.10  # rollups/ against events/
TARGET_COMMIT_GROWTH = 1.2  # a commit into the big lake against one into an empty lake


# --- the corpus ------------------------------------------------------------------------------------------------


def log_files(corpus: Path) -> list[Path]:
    """The CloudTrail log files (not digests) under a trail folder, in listing order."""
    found = []
    for folder, dirs, files in os.walk(corpus):
        dirs.sort()
        if "CloudTrail-Digest" in folder or "CloudTrail-Insight" in folder:
            continue
        found.extend(Path(folder, name) for name in sorted(files) if name.endswith(".json.gz"))
    return found


def build_corpus(folder: Path, events: int, events_per_day: int) -> dict[str, Any]:
    per_day = min(events_per_day, events)
    days = max(1, math.ceil(events / per_day))
    result = h.simulate(folder, days=days, seed=SEED, start=START, events_per_day=per_day)
    files = log_files(folder)
    return {
        "events": result.events,
        "kms_and_secrets_events": result.kms_events + result.secrets_events,
        "files": len(files),
        "bytes_gz": sum(path.stat().st_size for path in files),
        "days": days,
    }


# --- the stages (run as children) ---------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


def child_floor(corpus: Path) -> dict[str, Any]:
    from isal import isal_zlib

    decode = msgspec.json.Decoder(_Envelope).decode
    result: dict[str, Any] = {}
    with h.timed_work(result):
        events = raw_bytes = 0
        for path in log_files(corpus):
            with open(path, "rb") as handle:
                data = isal_zlib.decompress(handle.read(), wbits=31)  # 31: gzip framing; isal's fastest path
            raw_bytes += len(data)
            events += len(decode(data).Records)
    result.update(events=events, raw_bytes=raw_bytes)
    return result


def _bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.parquet"))


def child_ingest(corpus: Path, lake: Path, workers: int, rollups: bool = True) -> dict[str, Any]:
    from pipeline import lake as lakelib
    from pipeline.ingest import ingest
    from pipeline.lake import rollups as rollups_module

    if not rollups:  # this measuring process only (w=1 reads and writes here): every rollup is empty, no file
        rollups_module.hourly = lambda events: rollups_module.ROLLUP_SCHEMA.empty_table()
    shutil.rmtree(lake, ignore_errors=True)
    result: dict[str, Any] = {}
    try:
        with h.timed_work(result):
            report = ingest(str(corpus), lake, workers=workers)
        result.update(events_bytes=_bytes(lakelib.events_dir(lake)), rollup_bytes=_bytes(lakelib.rollups_dir(lake)))
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    result.update(events=report.events_seen, kept=report.events_kept, quarantined=report.quarantined_anything)
    return result


# The peer: the events projection of _harness, written as the lake would be.
DUCKDB_SQL = f"""
COPY ({h.EVENTS_FROM_JSON_SQL})
TO '{{out}}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (event_date), ROW_GROUP_SIZE 65536)
"""


def child_duckdb(corpus: Path, out: Path, threads: int) -> dict[str, Any]:
    import duckdb

    shutil.rmtree(out, ignore_errors=True)
    files = [str(path) for path in log_files(corpus)]
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute("SET preserve_insertion_order = false")  # its best form: ~2x less CPU, ~3x less memory here
    con.execute(f"SET threads = {int(threads)}")
    result: dict[str, Any] = {"threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}
    try:
        with h.timed_work(result):
            # COPY ... TO takes no parameter for its target: the path is ours, never user input.
            con.execute(
                DUCKDB_SQL.format(out=out.as_posix()),
                {"structure": h.JSON_STRUCTURE, "files": files},
            )
        parquet = f"{out.as_posix()}/**/*.parquet"
        result["kept"] = con.execute("SELECT count(*) FROM read_parquet($p)", {"p": parquet}).fetchone()[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result


STAGES = {
    "floor": lambda corpus: child_floor(Path(corpus)),
    "ingest": lambda corpus, lake, workers, rollups="on": child_ingest(
        Path(corpus), Path(lake), int(workers), rollups == "on"
    ),
    "duckdb": lambda corpus, out, threads: child_duckdb(Path(corpus), Path(out), int(threads)),
    "commit": _commit.child_commit,
}


# --- the run ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = h.arguments(
        __doc__,
        "uv run python bench/ingest.py --quick",
        events="corpus size in events (default 1,000,000; --quick: 50,000)",
        quick="a 50,000-event corpus: a quick look, not the figure",
    )
    parser.add_argument("--events-per-day", type=int, default=EVENTS_PER_DAY, help="simulated trail density")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stage; the median (by CPU) is shown")
    parser.add_argument(
        "--corpus", type=Path, help="measure this trail folder instead of the simulated one (e.g. gen_corpus.py's)"
    )
    parser.add_argument(
        "--commit-lake-events",
        type=int,
        help="(e): the big lake's size for the commit cost (default 30,000,000; --quick or --events under 1M: "
        "1,000,000; 0: skip)",
    )
    args = parser.parse_args()
    events = args.events or (50_000 if args.quick else 1_000_000)
    full = not args.quick and (args.events is None or args.events >= 1_000_000)  # the figure's run, not a look
    big_lake = 30_000_000 if full else 1_000_000
    if args.commit_lake_events is not None:
        big_lake = args.commit_lake_events
    script = Path(__file__).resolve()

    if args.corpus is not None:
        corpus = args.corpus.resolve()
        files = log_files(corpus)
        facts = {"files": len(files), "bytes_gz": sum(path.stat().st_size for path in files)}
        h.console.print(f"corpus {corpus}: {facts['files']:,} log files, {h.mb(facts['bytes_gz'])} gzipped")
    else:
        corpus = args.data / f"ingest-trail-{events}-{args.events_per_day}"
        params = {"events": events, "events_per_day": args.events_per_day, "seed": SEED, "start": START.isoformat()}
        facts = h.cached(corpus, params, lambda folder: build_corpus(folder, events, args.events_per_day))
        h.console.print(
            f"corpus {corpus}: {facts['events']:,} events ({facts['kms_and_secrets_events']:,} KMS + Secrets "
            f"Manager) in {facts['files']:,} log files, {h.mb(facts['bytes_gz'])} gzipped; {os.cpu_count()} CPUs"
        )
    commit_lake = args.data / f"commit-lake-{big_lake}"
    if big_lake:
        h.cached(commit_lake, {"events": big_lake}, lambda folder: _commit.build(folder, big_lake))
    if args.prepare:
        return

    scratch = args.data / "scratch"
    stages = [("floor", [str(corpus)], "(a) floor")]
    stages += [("ingest", [str(corpus), str(scratch / f"lake-{n}"), str(n)], f"(b) ingest w={n}") for n in (1, 2)]
    stages.append(("ingest", [str(corpus), str(scratch / "lake-bare"), "1", "off"], "(d) ingest w=1, no rollups"))
    if not args.skip_duckdb:
        # 1 thread is DuckDB's best per core (~25% less CPU than 2 here); 2 threads its best wall time
        stages += [("duckdb", [str(corpus), str(scratch / "duckdb-out"), str(n)], f"(c) duckdb t={n}") for n in (1, 2)]
    if big_lake:
        stages.append(("commit", ["", "0"], "(e) commit into an empty lake"))
        stages.append(
            ("commit", [str(commit_lake), str(big_lake)], f"(e) commit into a {big_lake / 1e6:g}M-event lake")
        )
    runs: dict[str, list[h.Measured]] = {label: [] for _, _, label in stages}
    # Round-robin, not stage after stage: the load of other work on the machine drifts, and ratios such as the
    # rollups' cost ((b) w=1 against (d)) would otherwise compare runs taken under different loads.
    for run in range(args.repeat):
        for stage, stage_args, label in stages:
            with h.console.status(f"running {label} ({run + 1}/{args.repeat}) ..."):
                runs[label].append(h.run_child(script, stage, stage_args, label))
    measured = {label: sorted(done, key=lambda m: m.cpu)[len(done) // 2] for label, done in runs.items()}  # medians
    shutil.rmtree(scratch, ignore_errors=True)
    report(facts, measured, args.repeat)


STAGES_HELP = """\
(a) floor      read + isal gunzip + msgspec split of the Records array, 1 process
(b) ingest w=N pipeline.ingest.ingest into a fresh lake, N worker processes
(c) duckdb t=N read_json_objects + json_transform + unnest + filter + COPY TO partitioned Parquet, N threads
(d) ingest     (b) w=1 with the hourly rollups switched off: their cost at ingest
(e) commit     one batch's commit (segments adopted, event-id probe, index, rollups, ledger) into an empty lake and
               into a big one (synthetic events, built once): the commit cost must not grow with the lake"""


def report(facts: dict[str, Any], measured: dict[str, h.Measured], repeat: int) -> None:
    floor = next(m for m in measured.values() if m.name.startswith("(a)"))
    raw_bytes = floor.data["raw_bytes"]
    events = floor.data["events"]
    rows = []
    commits = [m for m in measured.values() if m.name.startswith("(e)")]
    for m in measured.values():
        if m in commits:
            continue
        seen = m.data.get("events", events)
        rows.append(
            [
                m.name,
                f"{seen / m.wall:,.0f}",
                f"{seen / m.cpu:,.0f}",
                f"{raw_bytes / m.cpu / 1e6:,.0f}",
                f"{m.wall:.2f}",
                f"{m.cpu:.2f}",
                h.mib(m.peak_rss),
                " + ".join(f"{peak / 2**20:,.0f}" for peak in m.peaks if peak > 32 * 2**20),
                f"{m.data['kept']:,}" if "kept" in m.data else "",
            ]
        )
    h.console.print(STAGES_HELP + f"\neach stage: the median of {repeat} run(s) by CPU time")
    h.table(
        f"ingest: {events:,} events, {h.mb(raw_bytes)} uncompressed ({raw_bytes / events:,.0f} B/event)",
        ["stage", "events/s", "events/CPU-s", "MB/CPU-s", "wall s", "CPU s", "peak RSS", "each process MiB", "kept"],
        rows,
    )
    one = next(m for m in measured.values() if m.name.endswith("w=1"))
    two = next(m for m in measured.values() if m.name.endswith("w=2"))
    ducks = [m for m in measured.values() if m.name.startswith("(c)")]
    duck = min(ducks, key=lambda m: m.cpu) if ducks else None  # its best per core
    per_core = events / one.cpu
    share = per_core / (events / floor.cpu)
    speedup = one.wall / two.wall
    peak = max(one.peak_rss, two.peak_rss)
    lines = [
        ["(b)/(a) per core", f"{share:.0%}", f">= {TARGET_FLOOR_SHARE:.0%}", h.verdict(share >= TARGET_FLOOR_SHARE)],
    ]
    if duck is not None:
        ratio = per_core / (events / duck.cpu)
        lines.append(
            [
                f"(b)/(c) per core, vs {duck.name}",
                f"{ratio:.2f}x",
                f">= {TARGET_VS_DUCKDB:.0f}x",
                h.verdict(ratio >= TARGET_VS_DUCKDB),
            ]
        )
    lines += [
        ["peak RSS of (b)", h.mib(peak), "< 512 MiB", h.verdict(peak < TARGET_RSS)],
        ["2-worker speed-up (wall)", f"{speedup:.2f}x", f">= {TARGET_SPEEDUP}x", h.verdict(speedup >= TARGET_SPEEDUP)],
        ["2-worker events/CPU-s", f"{events / two.cpu:,.0f}", "", ""],
    ]
    bare = next((m for m in measured.values() if m.name.startswith("(d)")), None)
    if bare is not None:
        extra = one.cpu / bare.cpu - 1
        share = one.data["rollup_bytes"] / max(one.data["events_bytes"], 1)
        lines += [
            [
                "rollups: CPU per event, (b) w=1 / (d) - 1",
                f"{extra:+.1%}",
                f"<= +{TARGET_ROLLUP_CPU:.0%}",
                h.verdict(extra <= TARGET_ROLLUP_CPU),
            ],
            [
                "rollups: bytes of rollups/ / events/",
                f"{share:.1%} ({one.data['rollup_bytes'] / 1e3:,.0f} kB / {one.data['events_bytes'] / 1e3:,.0f} kB)",
                f"<= {TARGET_ROLLUP_BYTES:.0%}",
                h.verdict(share <= TARGET_ROLLUP_BYTES),
            ],
        ]
    if len(commits) == 2:
        empty, big = commits
        growth = big.cpu / empty.cpu  # CPU: the wall time of a 0.3 s step swings with other work's fsyncs here
        lines.append(
            [
                f"commit of {_commit.BATCH_EVENTS:,} events into a {big.data['lake_events']:,}-event lake / empty "
                "(CPU)",
                f"{growth:.2f}x ({big.cpu:.3f} / {empty.cpu:.3f} CPU-s; wall {big.wall:.3f} / {empty.wall:.3f} s)",
                f"<= {TARGET_COMMIT_GROWTH}x",
                h.verdict(growth <= TARGET_COMMIT_GROWTH),
            ]
        )
    h.table("targets", ["figure", "value", "target", ""], lines)


if __name__ == "__main__":
    h.entry(main, STAGES)
