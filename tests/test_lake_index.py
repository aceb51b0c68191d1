"""The lake-wide event_id index: fingerprint runs merged like an LSM tree, exact confirmation of a fingerprint hit,
and the upgrade of a lake written before fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from test_lake import write_batch
from trails import lake_table

from pipeline import lake as lakelib
from pipeline.lake import ids as lake_ids
from pipeline.lake import layout


def runs(lake: Path) -> list[str]:
    return sorted(path.name.split("-", 1)[0] for path in lake_ids.fingerprints_dir(lake).glob("*.npy"))


def test_runs_merge_by_tier_and_every_committed_id_stays_found(lake: Path, monkeypatch) -> None:
    monkeypatch.setattr(lake_ids, "_FANOUT", 2)
    for n in range(5):
        write_batch(lake, [f"id-{n}-{i}" for i in range(3)], day=f"2024-05-0{n + 1}")
    assert runs(lake) == ["0", "2"]  # 5 runs: 4 merged twice into a tier-2 run, the newest alone
    probe = pa.array(["id-0-0", "id-3-2", "id-4-1", "new"])
    assert lakelib.committed_duplicates(lake, probe) == {"id-0-0", "id-3-2", "id-4-1"}
    write_batch(lake, ["id-1-1", "fresh"], day="2024-05-09")  # a re-delivery under another day
    assert sorted(lake_table(lake).column("event_id").to_pylist()).count("id-1-1") == 1


def test_a_fingerprint_hit_is_confirmed_against_the_ids_of_its_day(lake: Path, monkeypatch) -> None:
    write_batch(lake, ["a", "b"])
    real = lake_ids.fingerprints
    # every id gets the same fingerprint: each probe hits, and only the exact check tells them apart
    monkeypatch.setattr(
        lake_ids, "fingerprints", lambda ids: np.zeros(len(ids), dtype="<u8") + real(pa.array(["a"]))[0]
    )
    assert lakelib.committed_duplicates(lake, pa.array(["a", "zz"])) == {"a"}


def test_a_lake_written_before_fingerprints_is_upgraded_on_its_next_commit(lake: Path) -> None:
    first = write_batch(lake, ["a", "b"])
    write_batch(lake, ["c"], day="2024-05-02")
    # the old layout: one id file per batch, no per-day files, no runs
    table = pa.concat_tables(pq.read_table(path) for path in layout.ids_dir(lake).rglob("*.parquet"))
    for path in [*layout.ids_dir(lake).rglob("*.parquet"), *lake_ids.fingerprints_dir(lake).glob("*.npy")]:
        path.unlink()
    pq.write_table(table.cast(lake_ids.ID_SCHEMA), layout.ids_dir(lake) / f"{first.batch_id}.parquet")
    record_ = write_batch(lake, ["c", "d"], day="2024-05-03")
    assert (record_.events_kept, record_.events_duplicate) == (1, 1)
    assert not list(layout.ids_dir(lake).glob("*.parquet"))  # moved into per-day files
    assert lakelib.committed_duplicates(lake, pa.array(["a", "b", "d", "e"])) == {"a", "b", "d"}
