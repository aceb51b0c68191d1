"""When things happen and how much: hourly load profiles, the volume budget, Poisson schedules.

`events_per_day` is the whole trail's volume; KMS + Secrets Manager get about a third of it (all of it in
KMS-only mode). Fixed-size jobs (the nightly batch, deploys, rotation, the cross-account reader) are taken
out first; the rest is shared among the workloads by weight.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pipeline.simulate import shapes
from pipeline.simulate.calls import clamp
from pipeline.simulate.identities import DEPLOY_SECRETS, World

# Relative load per UTC hour. Workloads follow users (peak mid-day), humans work office hours, and a few
# jobs barely run at night, which is what makes a 03:00 burst stand out.
BUSINESS: tuple[float, ...] = (
    0.22, 0.18, 0.15, 0.13, 0.13, 0.15, 0.22, 0.35, 0.50, 0.65, 0.80, 0.90,
    1.00, 1.00, 1.00, 1.00, 0.97, 0.92, 0.85, 0.72, 0.60, 0.48, 0.36, 0.28,
)  # fmt: skip
OFFICE: tuple[float, ...] = (
    0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.20, 0.60, 0.90, 1.00, 1.00,
    0.80, 1.00, 1.00, 0.95, 0.90, 0.70, 0.40, 0.20, 0.10, 0.05, 0.03, 0.02,
)  # fmt: skip
DAYTIME: tuple[float, ...] = (
    0.04, 0.03, 0.03, 0.03, 0.03, 0.04, 0.10, 0.30, 0.60, 0.85, 1.00, 1.00,
    1.00, 1.00, 1.00, 1.00, 0.95, 0.85, 0.60, 0.35, 0.20, 0.10, 0.06, 0.05,
)  # fmt: skip
FLAT: tuple[float, ...] = (1.0,) * 24

NIGHTLY_START = 2 * 3600 + 5 * 60  # the nightly batch job starts at 02:05 UTC
NIGHTLY_SECONDS = 20 * 60
XACCT_START = 9 * 3600  # the analytics account reads the shared key from 09:00
DEPLOY_HOURS = (14, 17, 20)
ROTATION_START = 6 * 3600
ONBOARDING_SECOND = 10 * 3600 + 12 * 60  # new tenants appear at 10:12 on the focus day
ADMIN_SECOND = 14 * 3600 + 20 * 60  # the platform admin's routine policy work


@dataclass(frozen=True)
class Plan:
    """Simulation-wide settings every chunk needs (picklable: workers rebuild everything else)."""

    seed: int
    events_per_day: int
    kms_only: bool
    days: int
    focus_day: int
    accounts: tuple[str, ...] | int
    regions: tuple[str, ...]
    org: bool

    @property
    def kms_target(self) -> float:
        return float(self.events_per_day) if self.kms_only else self.events_per_day / 3


# Weighted workloads: label -> (principal, account name, secondary region?, profile, share of the budget).
STREAMS: dict[str, tuple[str, str, bool, tuple[float, ...], float]] = {
    "orders-api": ("orders-api", "prod", False, BUSINESS, 18),
    "orders-api-eu": ("orders-api", "prod", True, BUSINESS, 5),
    "billing-worker": ("billing-worker", "prod", False, BUSINESS, 7),
    "reporting-svc": ("reporting-svc", "prod", False, DAYTIME, 4),
    "payments-lambda": ("payments-lambda", "prod", False, BUSINESS, 6),
    "ledger-service": ("ledger-service", "prod", False, FLAT, 5),
    "import-worker": ("import-worker", "prod", False, BUSINESS, 3),
    "legacy-batch": ("legacy-batch", "prod", False, FLAT, 2),
    "data-lake-writer": ("data-lake-writer", "prod", False, BUSINESS, 6),
    "prod-humans": ("dave", "prod", False, OFFICE, 2),
    "glue-etl": ("glue-etl", "analytics", False, BUSINESS, 6),
    "glue-secrets": ("glue-etl", "analytics", False, BUSINESS, 2),
    "analytics-humans": ("grace", "analytics", False, OFFICE, 1),
    "artifact-builder": ("artifact-builder", "shared-services", False, OFFICE, 3),
    "ci-secrets": ("artifact-builder", "shared-services", False, OFFICE, 2),
    "shared-humans": ("heidi", "shared-services", False, OFFICE, 1),
    "dev-app": ("dev-app", "dev", False, OFFICE, 2),
    "dev-humans": ("ivan", "dev", False, OFFICE, 1),
}


class Budget:
    """Events per day for every workload, so the whole trail hits `events_per_day` with the KMS share."""

    def __init__(self, world: World, plan: Plan) -> None:
        e = plan.events_per_day
        self.nightly = max(120, round(0.03 * e))
        self.xacct = max(24, round(0.004 * e)) if world.org_trail and world.has("analytics-reader") else 0
        fixed = self.nightly + 2 * self.xacct + len(DEPLOY_HOURS) * DEPLOY_SECRETS * 2 + 30
        variable = max(plan.kms_target - fixed, 0.25 * plan.kms_target)
        present = {
            label: spec for label, spec in STREAMS.items()
            if world.has(spec[0]) and world.principal(spec[0]).account in world.recorded
        }  # fmt: skip
        total = sum(spec[4] for spec in present.values()) or 1.0
        self._per_day = {label: variable * spec[4] / total for label, spec in present.items()}

    def per_day(self, label: str) -> float:
        return self._per_day.get(label, 0.0)

    def peak_hourly(self, label: str) -> float:
        """Expected events in the busiest hour of a workload (what '20x its normal rate' is measured against)."""
        profile = STREAMS[label][3]
        return self.per_day(label) * max(profile) / sum(profile)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam < 30:  # Knuth: exact and cheap for small rates
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def diurnal(rng: random.Random, per_day: float, profile: tuple[float, ...]) -> list[int]:
    """Seconds of the day for ~per_day events spread over the hours by `profile`."""
    scale = per_day / sum(profile)
    seconds: list[int] = []
    uniform = rng.random
    for hour, weight in enumerate(profile):
        base = hour * 3600
        seconds.extend(base + int(uniform() * 3600) for _ in range(poisson(rng, weight * scale)))
    return seconds


def burst(rng: random.Random, count: int, start: int, duration: int) -> list[int]:
    uniform = rng.random
    return [clamp(start + int(uniform() * duration)) for _ in range(count)]


def region_of(world: World, secondary: bool) -> str:
    return world.regions[1] if secondary and len(world.regions) > 1 else world.regions[0]


_CONTEXTS: dict[tuple[tuple[str, str], ...], str] = {}


def context(*pairs: tuple[str, str]) -> str:
    """Encryption-context JSON text, cached (a few hundred distinct contexts cover the baseline)."""
    found = _CONTEXTS.get(pairs)
    if found is None:
        found = shapes.json_text(dict(pairs))
        _CONTEXTS[pairs] = found
    return found
