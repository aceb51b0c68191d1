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

from pipeline import analysis, catalog, findings, plots, runbook, safe_text
from pipeline.alerting.alert import SEVERITIES, Alert, alert_order
from pipeline.alerting.outbox import OutboxEntry
from pipeline.callers import display_name
from pipeline.names.resolve import account_label
from pipeline.times import chart_bucket, display
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
    command_prefix: str = "keytrail"  # how the reader runs keytrail: runbook commands are printed with it


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
    command_prefix: str = "keytrail",
) -> Report:
    """Collect the period's figures, charts and alerts (detections over [since, until), tuned by `tuning` as
    every run is, + the outbox)."""
    found: list[Alert] = []
    excepted = 0
    if run_detections:
        detections = findings.tuned_catalog(catalog.load("detections", queries_dir), tuning)
        found = findings.find(lake, since, until, detections=detections, tuning=tuning, now=now)
        excepted = len(findings.excepted(found))
    entries = analysis.outbox_entries(lake, since, until)
    merged = merge_alerts(found, entries)
    notes = [
        reconcile(found, entries, ran=run_detections)
        + (
            f" Of the findings, {excepted} of them excepted by the tuning file {tuning.path} (they do not page)."
            if excepted
            else ""
        )
    ]
    bucket = chart_bucket(since, until)
    marks = [(r.alert.first_seen, r.alert.detection_id) for r in merged]
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
    every = "hour" if bucket == dt.timedelta(hours=1) else f"{bucket.total_seconds() / 3600:g} h"
    charts = (
        (f"Calls per {every} by operation (red triangles: alerts)", per_hour, "event_name"),
        (f"Failed calls per {every} by error code (red triangles: alerts)", errors, "error_code"),
    )
    images = [
        (
            title,
            plots.to_data_uri(
                plots.stacked_over_time(
                    frame, time="hour", series=series, value="calls", title=title, bucket=bucket, marks=marks
                )
            ),
        )
        for title, frame, series in charts
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
        alerts=tuple(merged),
        charts=tuple(images),
        tables=(
            ("Top principals", principals),
            ("Top KMS keys", keys),
            ("Most read secrets", secrets),
            ("Encryption-context cardinality per key", contexts),
            ("Denied calls", denied),
        ),
        notes=tuple(notes),
        command_prefix=command_prefix,
    )


def reconcile(found: Sequence[Alert], entries: Sequence[OutboxEntry], *, ran: bool) -> str:
    """Why the number of findings and the number of alerts differ: one sentence for the page."""
    queued = {e.alert.alert_id for e in entries}
    found_ids = {a.alert_id for a in found}
    total = len(queued | found_ids)
    if not ran:
        return f"{total} alert(s) from the outbox (detections were not run for this report)."
    said = [f"{total} alert(s). This report's detection run found {len(found)} finding(s)"]
    if len(found_ids) < len(found):
        said.append(
            f", {len(found) - len(found_ids)} of them a repeat of another finding's alert (same detection, "
            "dedup key and window bucket: one alert)"
        )
    said.append(
        f"; {len(found_ids & queued)} of these alerts were already in the outbox, {len(found_ids - queued)} are new "
        f'(state "{NOT_IN_OUTBOX}"), and {len(queued - found_ids)} are in the outbox only (queued by runs whose '
        "window or params differed)."
    )
    return "".join(said)


def write(report: Report, out: Path) -> Path:
    out.write_text(render(report), encoding="utf-8")
    log.info("report written to %s (%d alerts)", out, len(report.alerts))
    return out


# --- rendering (pure) ------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#212529;background:#f8f9fa}
main{max-width:1180px;margin:0 auto;padding:24px 16px}
header h1{margin:0 0 4px}header p{margin:0;color:#495057}
h2{margin-top:32px;border-bottom:2px solid #dee2e6;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:22px}
.scroll{overflow-x:auto;max-width:100%;margin:8px 0 16px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#e9ecef;white-space:nowrap}
td.num,td.time,td.tag{white-space:nowrap}td.num{text-align:right}
td.id{overflow-wrap:anywhere;min-width:12em}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f1f3f5;padding:1px 4px;border-radius:3px;
overflow-wrap:anywhere}
ol.runbook li{margin:4px 0}
.alert{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:4px 12px;margin:12px 0}
.sev{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-weight:600}
.sev-critical{background:#862e9c}.sev-high{background:#c92a2a}.sev-medium{background:#e67700}
.sev-low{background:#1971c2}.sev-info{background:#868e96}
details{margin:2px 0}details p{white-space:pre-wrap;margin:4px 0 8px}
figure{background:#fff;border:1px solid #dee2e6;border-radius:6px;margin:12px 0;padding:8px}
figure img{max-width:100%;height:auto}figcaption{color:#495057}
@media (max-width:600px){main{padding:12px 8px}h1{font-size:22px}
.cards{gap:6px}.card{min-width:0;flex:1 1 28%;padding:6px 8px}.card b{font-size:17px}
#triage thead{display:none}#triage,#triage tbody,#triage tr{display:block}
#triage tr{border:1px solid #dee2e6;border-radius:6px;margin:0 0 8px;padding:6px 8px}
#triage td{display:inline-block;border:none;padding:1px 6px 1px 0;min-width:0}
#triage td.title{display:block}}
.muted{color:#868e96}
"""


def _e(value: Any, *, multiline: bool = False) -> str:
    return safe_text.html_text(_text(value), multiline=multiline)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return display(value)
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
    kinds = [_kind(frame[name]) for name in frame.columns]
    rows = "".join(
        "<tr>" + "".join(f'<td class="{k}">{_e(v)}</td>' for k, v in zip(kinds, row, strict=True)) + "</tr>"
        for row in frame.iter_rows()
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _kind(column: pl.Series) -> str:
    """A cell class: numbers and times never wrap; ids and ARNs may break anywhere; IPs and names stay whole."""
    if column.dtype.is_numeric():
        return "num"
    if column.dtype.is_temporal():
        return "time"
    texts = [str(v) for v in column.drop_nulls().head(50).to_list()]
    if any(t.startswith("arn:") or len(t) > 40 for t in texts):
        return "id"
    return "tag"


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


def _triage(report: Report) -> str:
    """The period's alerts in one table, most severe first, each row linking to its details below."""
    if not report.alerts:
        return '<p class="muted">No alerts in this period.</p>'
    head = "".join(f"<th>{h}</th>" for h in ("severity", "alert", "principal", "resource", "first seen", "state"))
    rows = []
    for item in report.alerts:
        a = item.alert
        rows.append(
            f'<tr><td class="tag"><span class="sev sev-{_e(a.severity)}">{_e(a.severity)}</span></td>'
            f'<td class="title"><a href="#{_anchor(a)}">{_e(a.title)}</a></td>'
            f'<td class="id" title="{_e(a.principal_arn or "")}">{_e(display_name(a.principal_arn) or "-")}</td>'
            f'<td class="id" title="{_e(a.resource_arn or "")}">{_e(display_name(a.resource_arn) or "-")}</td>'
            f'<td class="time">{_e(display(a.first_seen))}</td><td class="tag">{_e(item.state)}</td></tr>'
        )
    body = "".join(rows)
    return f'<div class="scroll"><table id="triage"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _anchor(alert: Alert) -> str:
    return f"alert-{alert.alert_id}"


def _alerts(report: Report) -> str:
    return "".join(_alert(item, report) for item in report.alerts)


def _runbook(alert: Alert, report: Report) -> str:
    steps = runbook.render(alert.runbook or "", alert, prefix=report.command_prefix, lake=report.lake)
    items = "".join(
        "<li>" + "".join(f"<code>{_e(p.text)}</code>" if p.code else _e(p.text) for p in step) + "</li>"
        for step in steps
    )
    return f'<ol class="runbook">{items}</ol>' if items else '<p class="muted">no runbook</p>'


def _alert(item: ReportAlert, report: Report) -> str:
    a = item.alert
    fields = (
        ("detection", a.detection_id),
        ("principal", a.principal_arn or "-"),
        (
            "resource",
            (f"{a.names['resource']} ({a.resource_arn})" if a.names.get("resource") else a.resource_arn) or "-",
        ),
        ("account / region", f"{account_label(a) or '-'} / {a.region or '-'}"),
        ("first / last seen", f"{display(a.first_seen)} .. {display(a.last_seen)}"),
        ("events", a.event_count),
        ("ATT&CK", a.attack),
        ("state", item.state),
        ("alert id", a.alert_id),
        *_exception_rows(a),
    )
    rows = "".join(f'<tr><th>{_e(k)}</th><td class="id">{_e(v)}</td></tr>' for k, v in fields)
    context = "".join(f'<tr><th>{_e(k)}</th><td class="id">{_e(v)}</td></tr>' for k, v in a.context.items())
    evidence = f"{report.command_prefix} query run alert_evidence --param alert_id={a.alert_id[:12]}"
    evidence += f" --lake {report.lake}"
    return (
        f'<section class="alert" id="{_anchor(a)}"><h3><span class="sev sev-{_e(a.severity)}">{_e(a.severity)}'
        f"</span> {_e(a.title)}</h3>"
        f'<div class="scroll"><table>{rows}</table></div><h4>Runbook</h4>{_runbook(a, report)}'
        + (
            f'<details><summary>Context</summary><div class="scroll"><table>{context}</table></div></details>'
            if context
            else ""
        )
        + f'<p class="muted">Evidence: <code>{_e(evidence)}</code> · <a href="#triage">back to the alerts</a></p>'
        "</section>"
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
    period = f"{display(report.since)} .. {display(report.until)}"
    charts = "".join(
        f'<figure><img src="{_e(uri)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
        for caption, uri in report.charts
    )
    tables = "".join(f"<h2>{_e(heading)}</h2>{_table(frame)}" for heading, frame in report.tables)
    notes = "".join(f'<p class="muted">{_e(note)}</p>' for note in report.notes)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>keytrail report {_e(period)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>keytrail report</h1><p>{_e(period)} · lake {_e(report.lake)} · generated "
        f"{_e(report.generated_at)}</p></header>"
        f'<h2 id="alerts">Alerts ({len(report.alerts)})</h2>{notes}{_triage(report)}'
        f'<h2 id="activity">Activity</h2>{_cards(report)}{charts}{tables}'
        f'<h2 id="details">Alert details and runbooks</h2>{_alerts(report)}'
        "</main></body></html>"
    )
