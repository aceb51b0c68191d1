"""`simulate()`: generate a whole trail, chunk by chunk (one recorded account, region and day each).

Chunks are independent (each has its own seeded RNG and rebuilds the world from the seed), so they can run
in worker processes in any order and still produce the same bytes. Nothing here reads the wall clock: the
start date is an argument; a monotonic timer only measures how long generation took.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline.simulate import incidents as incident_mod
from pipeline.simulate import lookalikes, noise, workloads
from pipeline.simulate.calls import Chunk
from pipeline.simulate.digests import DigestSigner, write_signing_keys
from pipeline.simulate.identities import ACCOUNT_NAMES, DEFAULT_REGIONS, World, build_world
from pipeline.simulate.incidents import DEFAULT_INCIDENTS, IncidentPlan, plan_incidents
from pipeline.simulate.results import InjectedIncident, SimulationResult
from pipeline.simulate.schedule import Budget, Plan
from pipeline.simulate.shapes import json_text
from pipeline.simulate.writer import ChunkFiles, Destination, Sink, chunk_files

log = logging.getLogger(__name__)

DEFAULT_EVENTS_PER_DAY = 20_000
MANIFEST = "simulation.json"
Progress = Callable[[int, int, int], None]  # (chunks done, chunks total, events so far)

_WORLDS: dict[Plan, World] = {}


def world_for(plan: Plan) -> World:
    """The world of a plan, built once per process."""
    world = _WORLDS.get(plan)
    if world is None:
        world = build_world(plan.seed, plan.accounts, plan.regions, plan.org)
        _WORLDS[plan] = world
    return world


@dataclass(frozen=True)
class _Job:
    plan: Plan
    incidents: tuple[IncidentPlan, ...]
    account: str
    region: str
    day_index: int
    start: dt.date
    dest: Destination
    digests: bool
    write_here: bool  # a worker writes local files itself instead of sending the bytes back


@dataclass
class _Output:
    files: ChunkFiles
    bytes_written: int
    incidents: list[InjectedIncident] = field(default_factory=list)


def _run_chunk(job: _Job) -> _Output:
    plan, world = job.plan, world_for(job.plan)
    day = job.start + dt.timedelta(days=job.day_index)
    c = Chunk(
        world,
        job.account,
        job.region,
        day,
        job.day_index,
        f"{plan.seed}:chunk:{job.account}:{job.region}:{job.day_index}",
    )
    budget = Budget(world, plan)
    workloads.generate(c, plan, budget)
    found = incident_mod.inject(c, job.incidents, budget)
    noise.generate(c, plan)
    files = chunk_files(c, job.dest.prefix, job.dest.trail_bucket, digests=job.digests)
    written = 0
    if job.write_here:
        sink = Sink(job.dest)
        try:
            for key, data in files.objects:
                sink.put(key, data)
        finally:
            sink.close()
        written = sink.bytes_written
        files.objects = []
    return _Output(files, written, found)


def _validate(days: int, events_per_day: int, workers: int) -> None:
    if days < 1:
        raise ValueError("days must be at least 1")
    if events_per_day < 100:
        raise ValueError("events_per_day must be at least 100 (the look-alikes alone need a few hundred)")
    if workers < 1:
        raise ValueError("workers must be at least 1")


def simulate(
    out: str,
    *,
    days: int,
    seed: int,
    start: dt.date,
    incidents: Sequence[str] = DEFAULT_INCIDENTS,
    org: bool = True,
    accounts: int | Sequence[str] = len(ACCOUNT_NAMES),
    regions: Sequence[str] = DEFAULT_REGIONS,
    events_per_day: int = DEFAULT_EVENTS_PER_DAY,
    kms_only: bool = False,
    s3_client: Any = None,
    workers: int = 1,
    digests: bool = True,
    progress: Progress | None = None,
) -> SimulationResult:
    """Write a realistic CloudTrail trail of `days` days from `start` to `out` (a folder or s3://bucket/prefix).

    `incidents` are injected on the last day (the default ones at distinct hours; `EVASIVE_INCIDENTS` by name);
    the benign look-alikes are always there.
    `org=False` writes a single-account trail (the first account, no `o-xxx/` level). `kms_only` leaves out
    the other services (for detection benchmarks). The same arguments always give the same bytes, whatever
    `workers` is. `workers > 1` uses spawned processes: call it from a console script or under
    `if __name__ == "__main__":`.
    """
    _validate(days, events_per_day, workers)
    plan = Plan(
        seed,
        events_per_day,
        kms_only,
        days,
        days - 1,
        accounts if isinstance(accounts, int) else tuple(accounts),
        tuple(regions),
        org,
    )
    world = world_for(plan)
    incident_plans = tuple(plan_incidents(world, incidents, plan.focus_day))
    dest = Destination.parse(out)
    sink = Sink(dest, s3_client)
    result = SimulationResult(
        out,
        seed,
        start,
        days,
        world.org_id if org else None,
        list(world.recorded),
        list(world.regions),
        events_per_day,
        kms_only,
        benign=lookalikes.benign_actors(world, plan),
    )
    local_workers = workers > 1 and dest.bucket is None
    jobs = [
        _Job(plan, incident_plans, account, region, day_index, start, dest, digests, local_workers)
        for day_index in range(days) for account in world.recorded for region in world.regions
    ]  # fmt: skip
    found: dict[str, InjectedIncident] = {}
    began = time.perf_counter()
    signer = DigestSigner(seed) if digests else None
    try:
        for done, output in enumerate(_outputs(jobs, workers), 1):
            for key, data in output.files.objects:
                sink.put(key, data)
            if signer is not None and output.files.digest_day is not None:
                for key, data, metadata in signer.sign_day(output.files.digest_day):
                    sink.put(key, data, metadata)
            _tally(result, output)
            found.update((incident.name, incident) for incident in output.incidents)
            if progress is not None:
                progress(done, len(jobs), result.events)
        result.incidents = [found[p.name] for p in incident_plans if p.name in found]
        sink.put(dest.prefix + MANIFEST, manifest(result, world))
        if signer is not None:
            write_signing_keys(sink, signer, start, days)
    finally:
        sink.close()
    result.bytes_written += sink.bytes_written
    result.seconds = time.perf_counter() - began
    log.info("simulated %d events in %d files (%.0f events/s)", result.events, result.files, result.events_per_second)
    return result


def _outputs(jobs: list[_Job], workers: int) -> Iterable[_Output]:
    if workers <= 1:
        yield from map(_run_chunk, jobs)
        return
    # spawn, not fork: the parent may hold boto3 clients and upload threads
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_run_chunk, jobs, chunksize=1)


def _tally(result: SimulationResult, output: _Output) -> None:
    files = output.files
    result.files += files.log_files
    result.digest_files += files.digest_files
    result.events += files.events
    result.kms_events += files.kms_events
    result.secrets_events += files.secrets_events
    result.bytes_written += output.bytes_written


def manifest(result: SimulationResult, world: World) -> bytes:
    """`simulation.json`: what was generated and where the incidents are (no timings: stays deterministic)."""
    data = result.to_dict()
    for volatile in ("out", "seconds", "events_per_second", "bytes_written"):  # same bytes wherever written
        data.pop(volatile)
    data["generator"] = "keytrail simulate"
    data["org_trail"] = world.org_trail
    data["organization_id"] = world.org_id
    data["account_names"] = dict(zip(ACCOUNT_NAMES, world.account_ids, strict=False))
    data["external_account"] = world.external_account
    return json_text(data).encode()
