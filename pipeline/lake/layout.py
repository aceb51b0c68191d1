"""Where things live in a lake: the folders of events, rollups, quarantine, ledger and staging, and the partitions."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

_PARTITION_PREFIX = "event_date="


def events_dir(lake: Path) -> Path:
    return Path(lake) / "events"


ROLLUP_VERSION = 2  # bumped when the rollup grain changes (queries/rollups/hourly.sql)


def rollups_dir(lake: Path) -> Path:
    """The hourly rollups, partitioned by day like the events (see `rollups`). The folder carries the grain's
    version: a lake written with an older grain has none here, so readers compute the rollups of those days
    from their events (with a warning) until `keytrail rollups rebuild` stores them."""
    return Path(lake) / "rollups" / f"hourly-v{ROLLUP_VERSION}"


def quarantine_dir(lake: Path) -> Path:
    return Path(lake) / "quarantine"


def ledger_dir(lake: Path) -> Path:
    return Path(lake) / "_ledger"


def batches_dir(lake: Path) -> Path:
    return ledger_dir(lake) / "batches"


def ids_dir(lake: Path) -> Path:
    return ledger_dir(lake) / "ids"


def intents_dir(lake: Path) -> Path:
    return ledger_dir(lake) / "intents"


def staging_dir(lake: Path) -> Path:
    return Path(lake) / "_staging"


def partition_name(day: dt.date) -> str:
    return f"{_PARTITION_PREFIX}{day.isoformat()}"


def partition_dir(lake: Path, day: dt.date) -> Path:
    return events_dir(lake) / partition_name(day)


def partition_day(name: str) -> dt.date | None:
    """The day of a partition folder's name; None for any other name."""
    if not name.startswith(_PARTITION_PREFIX):
        return None
    try:
        return dt.date.fromisoformat(name[len(_PARTITION_PREFIX) :])
    except ValueError:
        return None


def rollup_partition_dir(lake: Path, day: dt.date) -> Path:
    return rollups_dir(lake) / partition_name(day)


def partition_dirs(lake: Path, start: dt.date | None, end: dt.date | None, rollups: bool = False) -> list[Path]:
    """The partition folders of the days in [start, end] (inclusive; None = unbounded), sorted: the events',
    or with `rollups` the hourly rollups'."""
    root = rollups_dir(lake) if rollups else events_dir(lake)
    if start is not None and end is not None:
        if end < start:
            return []
        if (end - start).days <= 366:  # probe the range's days: cost follows the range, not the lake
            days = (start + dt.timedelta(days=offset) for offset in range((end - start).days + 1))
            return [path for path in (root / partition_name(day) for day in days) if path.is_dir()]
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        day = partition_day(entry.name)
        if day is not None and entry.is_dir() and (start is None or day >= start) and (end is None or day <= end):
            found.append(Path(entry.path))
    return sorted(found)


def partitions(lake: Path, rollups: bool = False) -> list[dt.date]:
    """Every partition day present in the lake (with `rollups`: every day holding rollup files)."""
    return [day for folder in partition_dirs(lake, None, None, rollups) if (day := partition_day(folder.name))]
