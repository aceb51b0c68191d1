"""`keytrail report`: a self-contained HTML page with the period's alerts (and runbooks), charts and tables."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline import report, runbook
from pipeline.alerting.outbox import Outbox
from pipeline.cli import app
from tests.analyst_lake import END, LAST_DAY, AnalystLake, analyst_lake_fixture, make_alert

analyst_lake = pytest.fixture(scope="session")(analyst_lake_fixture)
NOW = dt.datetime(2024, 5, 9, 6, tzinfo=dt.UTC)


def test_the_report_shows_every_alert_with_its_runbook_and_inline_charts(analyst_lake: AnalystLake) -> None:
    built = report.build(analyst_lake.path, LAST_DAY, END, now=NOW)
    page = report.render(built)
    with Outbox.open(analyst_lake.path, create=False) as box:
        entries = box.entries()
    assert entries
    for entry in entries:
        assert entry.alert.alert_id in page
        # the runbook as numbered steps, its commands filled in for this alert and ready to paste
        steps = runbook.render(entry.alert.runbook, entry.alert, prefix="keytrail", lake=analyst_lake.path)
        assert len(steps) > 1
        for step in steps:
            for part in step:
                assert (f"<code>{html.escape(part.text)}</code>" if part.code else html.escape(part.text)) in page
    for severity in {e.alert.severity for e in entries}:
        assert f'<span class="sev sev-{severity}">' in page
    # The detections re-run over the period find what the outbox holds: nothing is "new".
    assert {r.alert.alert_id for r in built.alerts} == {e.alert.alert_id for e in entries}
    assert all(r.state == "pending" for r in built.alerts)
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)) == 3
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not load anything from outside"
    for heading in ("Top principals", "Top KMS keys", "Most read secrets", "Denied calls"):
        assert f'<h2>{heading}</h2><div class="scroll"><table>' in page
    assert f"{built.totals['events']:,}" in page and built.totals["events"] > 0


def test_values_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    built = report.Report(
        lake=Path("/lake"),
        since=dt.datetime(2024, 5, 8, tzinfo=dt.UTC),
        until=dt.datetime(2024, 5, 9, tzinfo=dt.UTC),
        generated_at=NOW,
        totals={"events": 1},
        alerts=(report.ReportAlert(make_alert(principal_arn=evil, runbook=evil, context={evil: evil}), "pending"),),
        charts=(("chart", 'data:image/png;base64,AAAA" onerror="x'),),
        tables=(("Top principals", pl.DataFrame({"principal": [evil], "calls": [1]})),),
    )
    page = report.render(built)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onerror="x' not in page


def test_merge_keeps_the_outbox_state_and_adds_new_findings() -> None:
    sent, new = make_alert(alert_id="s" * 32, severity="medium"), make_alert(alert_id="n" * 32, severity="critical")

    class Entry:
        alert, state = sent, "sent"

    merged = report.merge_alerts([new, sent], [Entry()])  # type: ignore[list-item]
    assert [(r.alert.alert_id, r.state) for r in merged] == [("n" * 32, report.NOT_IN_OUTBOX), ("s" * 32, "sent")]


def test_report_cli_writes_the_file(analyst_lake: AnalystLake, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    runner = CliRunner()
    args = ["report", "--lake", str(analyst_lake.path), "--since", "2024-05-08", "--until", "2024-05-09"]
    result = runner.invoke(app, [*args, "--out", str(out), "--no-detect"])
    assert result.exit_code == 0, result.stderr
    assert out.read_text().startswith("<!doctype html>") and "alert(s)" in result.stderr
    result = runner.invoke(app, ["report", "--lake", str(analyst_lake.path), "--since", "2024-05-09", "--until",
                                 "2024-05-08", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2 and "must be before" in result.stderr
