"""`keytrail report`: one self-contained HTML page summarising a period of the lake, for people who would rather
look than read: alerts by severity with their runbooks, volume charts, top principals/keys/secrets, denied calls.

`build` gathers the data (I/O: the lake, the outbox, the detections); `render` is pure and escapes every value
with `safe_text.html_text` (control, bidi and line-separator characters from a trail show as escapes); charts
are inline base64 PNGs, the CSS is inline: no external assets, safe to mail or attach.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import analysis, catalog, findings, plots, safe_text
from pipeline.alerting.alert import SEVERITIES, Alert, alert_order
from pipeline.alerting.outbox import OutboxEntry
from pipeline.names.resolve import account_label
from pipeline.times import iso
from pipeline.tuning.model import EMPTY, Tuning

log = logging.getLogger(__name__)

NOT_IN_OUTBOX = "new"  # found by this report's detection run, not (yet) in the lake's outbox


@dataclass(frozen=True)
class ReportAlert:
    alert: Alert
    state: str  # the outbox state (pending, sent, suppressed, excepted, failed) or NOT_IN_OUTBOX


@dataclass(frozen=True)
class Report:
    """Everything the page shows; `render` turns it into HTML."""

    lake: Path
    since: dt.datetime
    until: dt.datetime
    generated_at: dt.datetime
    totals: dict[str, int]
    alerts: tuple[ReportAlert, ...]
    charts: tuple[tuple[str, str], ...]  # (caption, data URI)
    tables: tuple[tuple[str, pl.DataFrame], ...]  # (heading, rows)
    notes: tuple[str, ...] = field(default=())


def merge_alerts(found: Iterable[Alert], entries: Iterable[OutboxEntry]) -> list[ReportAlert]:
    """Outbox alerts (with their state) plus detected ones not in the outbox, most severe then oldest first."""
    merged: dict[str, ReportAlert] = {e.alert.alert_id: ReportAlert(e.alert, e.state) for e in entries}
    for alert in found:  # a finding a tuning exception covers is excepted whether or not it was queued
        merged.setdefault(alert.alert_id, ReportAlert(alert, "excepted" if alert.exception else NOT_IN_OUTBOX))
    return sorted(merged.values(), key=lambda r: alert_order(r.alert))


def build(
    lake: Path,
    since: dt.datetime,
    until: dt.datetime,
    *,
    now: dt.datetime,
    run_detections: bool = True,
    queries_dir: Path | None = None,
    tuning: Tuning = EMPTY,
) -> Report:
    """Collect the period's figures, charts and alerts (detections over [since, until), tuned by `tuning` as
    every run is, + the outbox)."""
    notes: list[str] = []
    found: list[Alert] = []
    if run_detections:
        detections = findings.tuned_catalog(catalog.load("detections", queries_dir), tuning)
        found = findings.find(lake, since, until, detections=detections, tuning=tuning, now=now)
        excepted = len(findings.excepted(found))
        notes.append(
            f"Detections were run over the period: {len(found)} finding(s)"
            + (f", {excepted} of them excepted by the tuning file {tuning.path}." if excepted else ".")
        )
    entries = analysis.outbox_entries(lake, since, until)
    with analysis.open_window(lake, since, until) as engine:
        totals = analysis.totals(engine)
        per_hour = analysis.calls_per_hour(engine)
        errors = analysis.errors_per_hour(engine)
        principals = analysis.top_principals(engine)
        keys = analysis.top_keys(engine)
        secrets = analysis.top_secrets(engine)
        contexts = analysis.context_cardinality(engine)
        denied = analysis.investigation(engine, "denied_activity", {"limit": 25})
        coverage = analysis.log_coverage(engine)
    notes.append(coverage.line() if coverage.total else _NOT_VERIFIED)
    charts = (
        ("Calls per hour by operation", per_hour, "hour", "event_name", "calls"),
        ("Failed calls per hour by error code", errors, "hour", "error_code", "calls"),
    )
    images = [
        (title, plots.to_data_uri(plots.stacked_over_time(frame, time=t, series=s, value=v, title=title)))
        for title, frame, t, s, v in charts
    ]
    images.append(
        (
            "Busiest principals",
            plots.to_data_uri(plots.top_bars(principals, label="principal", value="calls", title="Busiest principals")),
        )
    )
    return Report(
        lake=lake,
        since=since,
        until=until,
        generated_at=now,
        totals=totals,
        alerts=tuple(merge_alerts(found, entries)),
        charts=tuple(images),
        tables=(
            ("Top principals", principals),
            ("Top KMS keys", keys),
            ("Most read secrets", secrets),
            ("Encryption-context cardinality per key", contexts),
            ("Denied calls", denied),
        ),
        notes=tuple(notes),
    )


def write(report: Report, out: Path) -> Path:
    out.write_text(render(report), encoding="utf-8")
    log.info("report written to %s (%d alerts)", out, len(report.alerts))
    return out


# --- rendering (pure) ------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#212529;background:#f8f9fa}
main{max-width:1180px;margin:0 auto;padding:24px}
header h1{margin:0 0 4px}header p{margin:0;color:#495057}
h2{margin-top:32px;border-bottom:2px solid #dee2e6;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top;word-break:break-all}
th{background:#e9ecef;word-break:normal}
.sev{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-weight:600}
.sev-critical{background:#862e9c}.sev-high{background:#c92a2a}.sev-medium{background:#e67700}
.sev-low{background:#1971c2}.sev-info{background:#868e96}
details{margin:2px 0}details p{white-space:pre-wrap;margin:4px 0 8px}
figure{background:#fff;border:1px solid #dee2e6;border-radius:6px;margin:12px 0;padding:8px}
figure img{max-width:100%}figcaption{color:#495057}
.muted{color:#868e96}
"""


def _e(value: Any, *, multiline: bool = False) -> str:
    return safe_text.html_text(_text(value), multiline=multiline)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(frame: pl.DataFrame, empty: str = "nothing in this period") -> str:
    if frame.is_empty():
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(name)}</th>" for name in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cards(report: Report) -> str:
    counts = {s: sum(1 for r in report.alerts if r.alert.severity == s) for s in SEVERITIES}
    cards = [(label, report.totals.get(key, 0)) for key, label in _TOTALS]
    cards.append(("alerts", sum(1 for r in report.alerts if r.state != "excepted")))
    cards.append(("excepted", sum(1 for r in report.alerts if r.state == "excepted")))
    cards += [(severity, counts[severity]) for severity in reversed(SEVERITIES) if counts[severity]]
    return (
        '<div class="cards">' + "".join(f'<div class="card"><b>{_e(n)}</b>{_e(t)}</div>' for t, n in cards) + "</div>"
    )


_NOT_VERIFIED = "No log file of this period was verified: run `keytrail verify` over it (coverage unknown)."

_TOTALS: tuple[tuple[str, str], ...] = (
    ("events", "events"),
    ("principals", "principals"),
    ("keys", "KMS keys"),
    ("secrets", "secrets"),
    ("denied", "denied calls"),
    ("errors", "other errors"),
)


def _alerts(alerts: Sequence[ReportAlert]) -> str:
    if not alerts:
        return '<p class="muted">No alerts in this period.</p>'
    parts: list[str] = []
    for severity in reversed(SEVERITIES):
        group = [r for r in alerts if r.alert.severity == severity]
        if not group:
            continue
        parts.append(f'<h3><span class="sev sev-{severity}">{_e(severity)}</span> {len(group)} alert(s)</h3>')
        for item in group:
            parts.append(_alert(item))
    return "".join(parts)


def _alert(item: ReportAlert) -> str:
    a = item.alert
    fields = (
        ("detection", a.detection_id),
        ("principal", a.principal_arn or "-"),
        (
            "resource",
            (f"{a.names['resource']} ({a.resource_arn})" if a.names.get("resource") else a.resource_arn) or "-",
        ),
        ("account / region", f"{account_label(a) or '-'} / {a.region or '-'}"),
        ("first / last seen", f"{iso(a.first_seen)} .. {iso(a.last_seen)}"),
        ("events", a.event_count),
        ("ATT&CK", a.attack),
        ("state", item.state),
        ("alert id", a.alert_id),
        *_exception_rows(a),
    )
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in fields)
    context = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in a.context.items())
    return (
        f"<h4>{_e(a.title)}</h4><table>{rows}</table>"
        f"<details open><summary>Runbook</summary><p>{_e(a.runbook, multiline=True)}</p></details>"
        + (f"<details><summary>Context</summary><table>{context}</table></details>" if context else "")
        + f'<p class="muted">Evidence: keytrail query run alert_evidence --param alert_id={_e(a.alert_id[:12])}</p>'
    )


def _exception_rows(alert: Alert) -> tuple[tuple[str, Any], ...]:
    """What a reader needs to judge an excepted alert: which exception, why, whose, until when."""
    if not alert.exception:
        return ()
    found = alert.exception
    expires = found.get("expires") or "never"
    return (
        (
            "excepted by",
            f"{found.get('id')} ({found.get('source')}): {found.get('reason')}; "
            f"owner {found.get('owner')}, expires {expires}",
        ),
    )


def render(report: Report) -> str:
    """The report as one HTML document (inline CSS and images, every value escaped)."""
    period = f"{iso(report.since)} .. {iso(report.until)}"
    charts = "".join(
        f'<figure><img src="{_e(uri)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
        for caption, uri in report.charts
    )
    tables = "".join(f"<h2>{_e(heading)}</h2>{_table(frame)}" for heading, frame in report.tables)
    notes = "".join(f'<p class="muted">{_e(note)}</p>' for note in report.notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>keytrail report {_e(period)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>keytrail report</h1><p>{_e(period)} · lake {_e(report.lake)} · generated "
        f"{_e(report.generated_at)}</p></header>{_cards(report)}{notes}"
        f'<h2 id="alerts">Alerts by severity</h2>{_alerts(report.alerts)}'
        f'<h2 id="activity">Activity</h2>{charts}{tables}'
        "</main></body></html>"
    )
