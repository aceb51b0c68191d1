"""Commit cost against lake size, for bench/ingest.py: one batch committed into an empty lake and into a lake that
holds many events (issue 16: at most 1.2x).

The measured step is what an ingest run's parent does per batch once its workers wrote the parts: adopt the
segments, then `BatchWriter.commit` (event-id probe against the lake, id files and fingerprint run, rollups
merged and staged, intent, renames, ledger record, run merging). The big lake is built once from synthetic
events (random UUIDs over 30 days, only the columns the schema requires) and cached; each measurement commits
into a hard-linked copy, so the cache never grows.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import _harness as h

BATCH_EVENTS = 200_000
BUILD_BATCH = 500_000  # MAX_BATCH_EVENTS: the batches a big lake was built of
DAYS = 30
START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def synthetic_events(count: int, seed: int) -> Any:
    """`count` events with random UUID event_ids over DAYS days (the schema's required columns only)."""
    import numpy as np
    import pyarrow as pa

    from pipeline.events import EVENTS_SCHEMA

    rng = np.random.default_rng(seed)
    raw = rng.bytes(16 * count).hex()
    ids = [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-{raw[i + 12 : i + 16]}-{raw[i + 16 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]
    offsets = np.sort(rng.integers(0, DAYS * 86_400 * 1_000_000, size=count))
    times = pa.array(offsets + int(START.timestamp() * 1_000_000), type=pa.timestamp("us", tz="UTC"))
    columns = {
        "event_id": pa.array(ids, pa.string()),
        "event_time": times,
        "event_date": times.cast(pa.date32()),
        "event_source": pa.array(["kms.amazonaws.com"] * count),
        "event_name": pa.array(["Decrypt"] * count),
        "source_object": pa.array([f"s3://bench/{seed}"] * count),
    }
    arrays = [columns.get(f.name, pa.nulls(count, f.type)) for f in EVENTS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=EVENTS_SCHEMA)


class _Object:
    def __init__(self, seed: int) -> None:
        self.source = f"s3://bench/{seed}"
        self.bucket, self.key, self.etag, self.size = "bench", str(seed), f"etag-{seed}", 1


def _segment(lake: Path, events: int, seed: int, folder: Path) -> tuple[Any, _Object]:
    """A segment as an ingest worker hands it over: parts written, fingerprints and rollup computed."""
    from pipeline.lake import Segment, SegmentWriter, rollups
    from pipeline.lake.ids import fingerprints

    table = synthetic_events(events, seed)
    writer = SegmentWriter(folder, f"bench-{seed}")
    for batch in table.to_batches(max_chunksize=65_536):
        writer.add(batch, [batch.num_rows])
    parts, ids = writer.finish()
    return Segment(parts, ids, fingerprints(ids.column(0)), rollups.hourly([p.path for p in parts])), _Object(seed)


def commit(lake: Path, events: int, seed: int) -> dict[str, Any]:
    """Prepare a segment, then time adopting and committing it."""
    from pipeline import lake as lakelib

    with lakelib.BatchWriter(lake) as writer:
        segment, obj = _segment(lake, events, seed, writer.staging / "segment")
        result: dict[str, Any] = {}
        with h.timed_work(result):
            writer.adopt(segment, [(obj, segment.rows, 0)])
            writer.commit()
    return result


def build(folder: Path, events: int) -> dict[str, Any]:
    from rich.progress import Progress

    with Progress(console=h.console, transient=True) as bar:
        task = bar.add_task(f"building a {events:,}-event lake", total=events)
        for seed in range(events // BUILD_BATCH):
            commit(folder, BUILD_BATCH, seed)
            bar.advance(task, BUILD_BATCH)
    return {"events": events}


def child_commit(lake: str, events: str) -> dict[str, Any]:
    """Measured child: commit BATCH_EVENTS fresh events into a hard-linked copy of `lake` ('' = an empty lake)."""
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"keytrail-commit-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    if lake:
        subprocess.run(["cp", "-al", lake, str(scratch)], check=True)
    try:
        result = commit(scratch, BATCH_EVENTS, 1_000_000 + int(events))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result | {"lake_events": int(events)}
