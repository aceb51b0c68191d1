"""A detection's runbook made concrete for one alert: numbered steps whose keytrail commands work when pasted.

A runbook in `queries/detections/<id>.yml` is prose with steps (`1. ... 2. ...`, or sentences) and commands in
backticks that name the alert's values by placeholders (`<principal_arn>`, `<resource_arn>`, `<alert_id>`,
...). For one alert, each placeholder becomes the alert's value (shell-quoted), and each keytrail command gets
the prefix the user runs keytrail with (`uv run keytrail` in a checkout), the lake, and for `query run` the
days around the alert, so it returns the alert's rows and not an empty default window. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from pipeline.alerting.alert import Alert

_NUMBERED = re.compile(r"(?:^|\s)\d+\.\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_CODE = re.compile(r"`([^`]+)`")
_PLACEHOLDER = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True)
class Part:
    """A piece of a step: prose, or code (`command` True when it is a keytrail command ready to paste)."""

    text: str
    code: bool = False
    command: bool = False


def steps(text: str) -> list[str]:
    """The runbook's steps: its numbered items, else its sentences."""
    flat = " ".join(text.split())
    numbered = [s.strip() for s in _NUMBERED.split(flat) if s.strip()]
    if len(numbered) > 1:
        return numbered
    return [s.strip() for s in _SENTENCE.split(flat) if s.strip()]


def values(alert: Alert) -> dict[str, str]:
    """Placeholder -> the alert's value, for every placeholder name runbooks use."""
    found = {
        "principal_arn": alert.principal_arn,
        "principal": alert.principal_arn,
        "resource_arn": alert.resource_arn,
        "resource": alert.resource_arn,
        "key": alert.resource_arn,
        "secret": alert.resource_arn,
        "arn": alert.resource_arn,
        "alert_id": alert.alert_id,
        "account_id": alert.account_id,
    }
    return {name: value for name, value in found.items() if value}


def command(code: str, alert: Alert, *, prefix: str, lake: Path | None) -> str | None:
    """A backticked keytrail command made runnable for `alert`, or None when `code` is not one (or names a
    value the alert does not have)."""
    if not code.startswith("keytrail "):
        return None
    known = values(alert)
    missing = [name for name in _PLACEHOLDER.findall(code) if name not in known]
    if missing:
        return None
    filled = _PLACEHOLDER.sub(lambda m: known[m.group(1)], code)
    words = shlex.split(filled)[1:]
    if words[:2] == ["query", "run"] and "--since" not in words and not any(w.startswith("since=") for w in words):
        start = alert.first_seen.date()
        words += ["--since", start.isoformat(), "--until", (alert.last_seen.date() + dt.timedelta(days=1)).isoformat()]
    if lake is not None and "--lake" not in words:
        words += ["--lake", str(lake)]
    return " ".join([prefix, *(shlex.quote(w) for w in words)])


def render(text: str, alert: Alert, *, prefix: str = "keytrail", lake: Path | None = None) -> list[list[Part]]:
    """The runbook's steps for `alert`, each a list of prose and code parts."""
    rendered: list[list[Part]] = []
    for step in steps(text):
        parts: list[Part] = []
        position = 0
        for match in _CODE.finditer(step):
            if match.start() > position:
                parts.append(Part(step[position : match.start()]))
            ready = command(match.group(1), alert, prefix=prefix, lake=lake)
            parts.append(Part(ready or match.group(1), code=True, command=ready is not None))
            position = match.end()
        if position < len(step):
            parts.append(Part(step[position:]))
        rendered.append(parts)
    return rendered


def commands(text: str, alert: Alert, *, prefix: str = "keytrail", lake: Path | None = None) -> list[str]:
    """Every ready-to-paste keytrail command of the runbook for `alert`."""
    return [part.text for step in render(text, alert, prefix=prefix, lake=lake) for part in step if part.command]


def as_text(text: str, alert: Alert, *, prefix: str = "keytrail", lake: Path | None = None) -> str:
    """The runbook for a terminal: numbered steps, one per paragraph, commands in backticks."""
    lines = []
    for number, step in enumerate(render(text, alert, prefix=prefix, lake=lake), start=1):
        body = "".join(f"`{p.text}`" if p.code else p.text for p in step)
        lines.append(f"{number}. {body}")
    return "\n".join(lines)
