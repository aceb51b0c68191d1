"""The one home of time: UTC instants, durations, relative times, bucket starts, parsing and printing.

Every instant keytrail handles is an aware `datetime` in UTC. Input comes in as ISO-8601 text (an offset is
honoured, no offset means UTC), a date (its midnight), a datetime, or - on the command line - a time relative to
a `now` the caller passes (nothing here reads the clock). Output has three spellings, one function each:
`iso` (machine: JSON, SQL params, file names), `display` (people: `2026-12-05 08:08:21Z`), `cloudtrail`
(CloudTrail's own `eventTime` shape, for generated events).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The earliest and latest instants keytrail accepts anywhere: before CloudTrail existed nothing is real, and
# year 9999 overflows every reader (DuckDB, pandas, Python's own arithmetic) at the first `+ timedelta`.
EARLIEST = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)

TIME_HELP = "ISO time (2024-05-01, 2024-05-01T10:00Z) or relative to now (now, -24h, -7d, -30m)"
DURATION_HELP = "a duration such as 30s, 10m, 1h, 7d, 2w or 1h30m"

_DURATION_PART = re.compile(r"(\d+)(w|d|h|m|s)")
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_RELATIVE = re.compile(r"^([+-])\s*(\S+)$")


def utc(moment: dt.datetime) -> dt.datetime:
    """An aware UTC datetime: naive means UTC already, an aware one is converted (never just relabelled)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def midnight(day: dt.date) -> dt.datetime:
    """The UTC instant a day starts."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def parse_duration(value: Any) -> dt.timedelta:
    """'90s', '10m', '1h', '7d', '2w', '1h30m' (or a timedelta / whole seconds) -> timedelta."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a duration: {value!r} (use {DURATION_HELP})")
    text = value.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r} (use {DURATION_HELP})")
    try:
        return dt.timedelta(seconds=sum(int(n) * _DURATION_UNITS[u] for n, u in parts))
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None


def parse_timestamp(value: Any) -> dt.datetime:
    """ISO-8601 text (Z or offset; naive means UTC), a date, or a datetime -> aware UTC datetime."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO-8601 time: {value!r} (use e.g. 2024-05-01T10:00:00Z)") from None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    try:
        return utc(moment)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC instant
        raise ValueError(f"time {value!r} is out of range") from None


def parse_time(value: str | dt.datetime | dt.date, now: dt.datetime) -> dt.datetime:
    """`now`, `-24h`, `+1h`, `-1d12h` (relative to `now`) or ISO-8601 (naive = UTC) -> aware UTC datetime."""
    if not isinstance(value, str):
        return parse_timestamp(value)
    text = value.strip()
    if text.lower() == "now":
        return parse_timestamp(now)
    relative = _RELATIVE.match(text)
    try:
        if relative:
            offset = parse_duration(relative.group(2))
            return parse_timestamp(now) + (offset if relative.group(1) == "+" else -offset)
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a time: use an {TIME_HELP}") from None


def in_range(moment: dt.datetime) -> bool:
    """True when `moment` lies in [EARLIEST, LATEST): the span every reader of the lake can represent."""
    return EARLIEST <= utc(moment) < LATEST


def iso(moment: dt.datetime) -> str:
    """Compact ISO-8601 UTC with Z (microseconds only when present): JSON, SQL params, examples."""
    return utc(moment).isoformat().replace("+00:00", "Z")


def display(moment: dt.datetime | None) -> str:
    """For people: `2026-12-05 08:08:21Z` (year, seconds, zone); empty for no time."""
    return utc(moment).strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else ""


def cloudtrail(moment: dt.datetime) -> str:
    """CloudTrail's eventTime spelling: `2024-05-08T10:15:00Z`."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(moment: dt.datetime) -> str:
    """`20240508T101500`: sortable, for names (batch ids, file names)."""
    return utc(moment).strftime("%Y%m%dT%H%M%S")


def epoch_seconds(moment: dt.datetime) -> float:
    return utc(moment).timestamp()


def epoch_ms(moment: dt.datetime) -> int:
    return int(utc(moment).timestamp() * 1000)


def bucket_start(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
    """The start of the fixed `width` bucket (aligned to the Unix epoch, UTC) holding `moment`."""
    seconds = int(width.total_seconds())
    if seconds <= 0:
        raise ValueError(f"bucket width must be positive, not {width}")
    offset = int((utc(moment) - EPOCH).total_seconds()) // seconds * seconds
    return EPOCH + dt.timedelta(seconds=offset)


def check_window(since: dt.datetime, until: dt.datetime) -> None:
    """A usable [since, until): ordered and inside the span the lake can hold; ValueError says what to fix."""
    if not in_range(since) or not in_range(until):
        raise ValueError(
            f"window {display(since)} .. {display(until)} is outside {display(EARLIEST)} .. {display(LATEST)}"
        )
    if since >= until:
        raise ValueError(f"--since ({display(since)}) must be before --until ({display(until)})")


def check_days(since: dt.date | None, until: dt.date | None) -> None:
    """A usable inclusive day range, either end open: ordered and inside the span the lake can hold."""
    for flag, day in (("--since", since), ("--until", until)):
        if day is not None and not in_range(midnight(day)):
            raise ValueError(f"{flag} {day.isoformat()} is outside {display(EARLIEST)} .. {display(LATEST)}")
    if since is not None and until is not None and since > until:
        raise ValueError(f"--since {since.isoformat()} is after --until {until.isoformat()}: swap them")


_CHART_BUCKETS = tuple(dt.timedelta(hours=h) for h in (1, 3, 6, 12, 24, 24 * 7))


def chart_bucket(since: dt.datetime, until: dt.datetime, most: int = 200) -> dt.timedelta:
    """The narrowest of 1h, 3h, 6h, 12h, 1d, 1w giving at most `most` bars over [since, until): a week of
    hours, a quarter of days, years of weeks."""
    span = utc(until) - utc(since)
    return next((b for b in _CHART_BUCKETS if span / b <= most), _CHART_BUCKETS[-1])
