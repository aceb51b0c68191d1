"""Verification throughput: `keytrail verify` over 8 days x 4 accounts x 2 regions of the simulator.

    uv run python bench/verify.py                 # 8 days x 4 accounts x 2 regions, 20,000 events a day
    uv run python bench/verify.py --quick         # 2 days, 2,000 events a day: a quick look

Stages (each in its own child process, see _harness.py), over the same signed trail:
  (a) floor   read every log object and SHA-256 its gunzipped content (isal), one thread: what any check pays
  (b) verify  `pipeline.integrity.verify.verify_source` end to end: digests, signatures, chains, log hashes
  (c) shared  (b) given the hashes ingest computed while reading the same objects (nothing read twice)
Checks: the clean trail verifies with every log file valid; (b) reads each log object exactly once (its
count equals the listing's); (c) reads no log object at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # bench/ is not a package: the scripts run by path

SEED = 2024
START = dt.date(2024, 5, 1)
DAYS, ACCOUNTS, REGIONS = 8, 4, ("us-east-1", "eu-west-1")
EVENTS_PER_DAY = 20_000


def _trail(data: Path, days: int, events_per_day: int) -> Path:
    folder = data / f"verify-trail-{days}-{events_per_day}"
    params = {"days": days, "events_per_day": events_per_day, "seed": SEED, "accounts": ACCOUNTS}

    def build(out: Path) -> dict[str, Any]:
        result = h.simulate(out / "trail", days=days, seed=SEED, start=START, events_per_day=events_per_day,
                            accounts=ACCOUNTS, regions=REGIONS)  # fmt: skip
        return {"log_files": result.files, "digest_files": result.digest_files}

    h.cached(folder, params, build)
    return folder / "trail"


def _logs(trail: str) -> list[Any]:
    from pipeline.s3 import LOG_KIND, list_source

    return [obj for obj in list_source(trail) if obj.kind == LOG_KIND]


def _floor(trail: str) -> dict[str, Any]:
    from isal import igzip

    logs = _logs(trail)
    with h.timed_work({}) as result:
        for obj in logs:
            hashlib.sha256(igzip.decompress(Path(obj.source).read_bytes())).hexdigest()
    return result | {"objects": len(logs)}


def _verify(trail: str, shared: str = "") -> dict[str, Any]:
    from pipeline.integrity import keys
    from pipeline.integrity.log_hash import hash_stored
    from pipeline.integrity.results import Coverage
    from pipeline.integrity.verify import verify_source

    public = keys.from_file(Path(trail) / "public-keys.json")
    logs = _logs(trail)
    known = {obj.source: hash_stored(Path(obj.source).read_bytes(), obj.key) for obj in logs} if shared else None
    with h.timed_work({}) as result:
        report = verify_source(trail, public, known=known)
    coverage = Coverage.of(report.rows)
    problems = sum(row.problem for row in report.rows)
    return result | {"objects": report.objects_read, "logs_read": report.logs_read, "listed": len(logs),
                     "digests": report.digests_read, "verified": coverage.verified, "total": coverage.total,
                     "problems": problems}  # fmt: skip


def main() -> None:
    parser = h.arguments(__doc__ or "", "uv run python bench/verify.py --quick", "events per day", "2 days, small")
    parser.add_argument("--days", type=int, help="days of the trail (default 8)")
    args = parser.parse_args()
    days = args.days or (2 if args.quick else DAYS)
    per_day = args.events or (2_000 if args.quick else EVENTS_PER_DAY)
    trail = _trail(args.data, days, per_day)
    if args.prepare:
        return
    script = Path(__file__).resolve()
    floor = h.run_child(script, "floor", [str(trail)], "(a) floor")
    verify = h.run_child(script, "verify", [str(trail)], "(b) verify")
    shared = h.run_child(script, "verify", [str(trail), "shared"], "(c) shared")
    table = h.Table(title=f"verify: {days} days x {ACCOUNTS} accounts x {len(REGIONS)} regions, {per_day:,} events/day")
    for column in ("stage", "wall s", "CPU s", "objects read", "objects/s", "peak RSS MB", "log files verified"):
        table.add_column(column, justify="right")
    for run in (floor, verify, shared):
        verified = f"{run.data['verified']:,} of {run.data['total']:,}" if "verified" in run.data else ""
        table.add_row(run.name, f"{run.wall:.2f}", f"{run.cpu:.2f}", f"{run.data['objects']:,}",
                      f"{run.data['objects'] / run.wall:,.0f}", f"{run.peak_rss / 2**20:,.0f}", verified)  # fmt: skip
    h.console.print(table)
    checks = [
        ("clean trail: every log file valid, nothing flagged",
         verify.data["problems"] == 0 and verify.data["verified"] == verify.data["total"] == verify.data["listed"]),
        ("(b) reads each log object once", verify.data["logs_read"] == verify.data["listed"]),
        ("(c) reads no log object ingest already hashed", shared.data["logs_read"] == 0),
    ]  # fmt: skip
    for name, met in checks:
        h.console.print(f"{name}: {'[green]met' if met else '[red]MISSED'}")
    h.console.print(f"(b) wall / (a) wall: {verify.wall / floor.wall:.2f}x (the floor hashes logs only, one thread)")


if __name__ == "__main__":
    h.entry(main, {"floor": _floor, "verify": _verify})
