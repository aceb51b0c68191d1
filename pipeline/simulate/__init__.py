"""Realistic CloudTrail trail generator with injectable incidents (for the demo, tests and benchmarks).

    from pipeline.simulate import simulate
    result = simulate("./trail", days=8, seed=7, start=date(2024, 5, 1))
    result.incidents  # where each incident landed, which detection must find it, its event ids
    result.benign     # the look-alike principals that must stay quiet

Modules: `identities` (the organization), `shapes` (record JSON templates), `calls` (a principal's calls),
`schedule` (profiles, volumes), `workloads` + `lookalikes` (the baseline), `noise` (other services),
`incidents` (+ `attacks`: the evasive ones), `routine` (their look-alikes), `writer` (the S3 layout),
`run` (orchestration).
"""

from pipeline.simulate.incidents import ALL_INCIDENTS, DEFAULT_INCIDENTS, EVASIVE_INCIDENTS, INCIDENTS
from pipeline.simulate.results import BenignActor, InjectedIncident, SimulationResult
from pipeline.simulate.run import DEFAULT_EVENTS_PER_DAY, MANIFEST, simulate

__all__ = [
    "ALL_INCIDENTS",
    "DEFAULT_EVENTS_PER_DAY",
    "DEFAULT_INCIDENTS",
    "EVASIVE_INCIDENTS",
    "INCIDENTS",
    "MANIFEST",
    "BenignActor",
    "InjectedIncident",
    "SimulationResult",
    "simulate",
]
