"""Runtime settings. `Settings.from_env()` is the only place KEYTRAIL_* variables are read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# CloudTrail's own management events are kept too: they show a trail being stopped or narrowed.
DEFAULT_EVENT_SOURCES: tuple[str, ...] = (
    "kms.amazonaws.com",
    "secretsmanager.amazonaws.com",
    "cloudtrail.amazonaws.com",
)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything a run can be configured with. Defaults suit the local demo."""

    lake: Path = Path("./keytrail-lake")
    event_sources: tuple[str, ...] = DEFAULT_EVENT_SOURCES
    endpoint_url: str | None = None
    region: str = "us-east-1"
    topic_arn: str | None = None
    # Accounts whose principals are trusted to use keys and secrets; empty = the accounts seen in the lake.
    trusted_accounts: tuple[str, ...] = ()
    realert_hours: float = 6.0
    storm_cap: int = 50
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    # A saved ListPublicKeys response (file or s3://bucket/key) for `keytrail verify`; None: ask CloudTrail.
    public_keys: str | None = None
    tuning: Path | None = None  # KEYTRAIL_TUNING; unset: ./keytrail.yaml when there is one (pipeline/tuning)
    # Where this machine keeps its replica of an s3:// lake (a read-through cache of its files), and its bound.
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "keytrail")
    cache_bytes: int = 2 << 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            lake=Path(env.get("KEYTRAIL_LAKE", str(defaults.lake))),
            event_sources=_split(env.get("KEYTRAIL_EVENT_SOURCES")) or defaults.event_sources,
            endpoint_url=env.get("KEYTRAIL_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("KEYTRAIL_REGION") or env.get("AWS_DEFAULT_REGION") or defaults.region,
            topic_arn=env.get("KEYTRAIL_TOPIC_ARN") or None,
            trusted_accounts=_split(env.get("KEYTRAIL_TRUSTED_ACCOUNTS")),
            realert_hours=float(env.get("KEYTRAIL_REALERT_HOURS", defaults.realert_hours)),
            storm_cap=int(env.get("KEYTRAIL_STORM_CAP", defaults.storm_cap)),
            workers=int(env.get("KEYTRAIL_WORKERS", defaults.workers)),
            public_keys=env.get("KEYTRAIL_PUBLIC_KEYS") or None,
            tuning=Path(env["KEYTRAIL_TUNING"]) if env.get("KEYTRAIL_TUNING") else None,
            cache_dir=Path(env.get("KEYTRAIL_CACHE", str(defaults.cache_dir))),
            cache_bytes=int(env.get("KEYTRAIL_CACHE_BYTES", defaults.cache_bytes)),
        )
