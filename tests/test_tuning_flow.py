"""The scheduled flow and `keytrail detect --publish` honour the same tuning file through the same path: the
same findings are excepted, with the same exception, and the flow's result counts them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.alerting.outbox import Outbox
from pipeline.cli import app
from tests import tuning_lake as tl
from tests.test_tuning_run import TUNING

pytest_plugins = ["prefect_fixtures"]
pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.usefixtures("prefect_harness")]


def outbox(lake: Path) -> dict[str, tuple[str, object]]:
    with Outbox.open(lake) as box:
        return {e.alert.alert_id: (e.state, e.alert.exception) for e in box.entries()}


def test_the_flow_and_detect_publish_except_the_same_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.detect import detect_and_alert

    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(textwrap.dedent(TUNING).replace("EXPIRES", "2099-12-31"))
    by_flow, by_cli = (tl.build(tmp_path / name / "lake") for name in ("flow", "cli"))
    monkeypatch.setenv("KEYTRAIL_TUNING", str(tuning))  # the flow reads its settings from the environment
    monkeypatch.delenv("KEYTRAIL_TOPIC_ARN", raising=False)

    result = detect_and_alert(str(by_flow), horizon="1h", now=tl.UNTIL, publish=False)
    window = ["--since", tl.SINCE.isoformat(), "--until", tl.UNTIL.isoformat()]
    cli = CliRunner().invoke(app, ["detect", "--lake", str(by_cli), *window, "--format", "json", "--publish"])
    assert cli.exit_code == 1 and "no SNS topic configured" in cli.stderr  # queued, nothing to publish to
    printed = [json.loads(line) for line in cli.stdout.splitlines()]

    assert len(result["excepted"]) == 2 and result["findings"] == len(printed)
    assert sorted(result["excepted"]) == sorted(a["alert_id"] for a in printed if "exception" in a)
    assert outbox(by_flow) == outbox(by_cli)
    assert sorted(i for i, (state, _) in outbox(by_flow).items() if state == "excepted") == sorted(result["excepted"])
