"""The HTML report in a real browser (headless Chromium, Debian's `chromium`, driven by playwright) at a phone's
420 px and a desktop's 1400 px: nothing overflows sideways, the alerts table comes before the first chart and
links to every alert's details, every chart loads and fits, and no number, time or IP address wraps.

Skips with the reason when no Chromium is installed (`.ci/run` installs it with apt-get). With
KEYTRAIL_SCREENSHOTS=DIR it also saves the screenshots the docs show (docs/img/report-420.png, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests import browser
from tests.analyst_lake import END, START, AnalystLake, analyst_lake_fixture

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
analyst_lake = pytest.fixture(scope="session")(analyst_lake_fixture)
WIDTHS = (420, 1400)


@pytest.fixture(scope="module")
def chromium() -> object:
    binary = browser.chromium()
    if binary is None:
        pytest.skip("no headless Chromium on this machine: `apt-get install chromium` (.ci/run does)")
    pytest.importorskip("playwright", reason="playwright (a dev dependency) is not installed: run `uv sync`")
    with browser.browser(binary) as launched:
        yield launched


@pytest.fixture(scope="module")
def page(analyst_lake: AnalystLake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    period = ["--since", START.isoformat(), "--until", END.date().isoformat()]
    result = CliRunner().invoke(app, ["report", "--lake", str(analyst_lake.path), *period, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_the_report_reads_well_at_phone_and_desktop_width(chromium: object, page: Path, width: int) -> None:
    seen = browser.measure(chromium, page, width)
    assert seen["width"] == width
    assert seen["scrollWidth"] <= width, f"the page scrolls sideways at {width} px"
    assert seen["triageLinks"] >= 10 and seen["triageOverflow"] <= 0, seen
    assert seen["triageTop"] < seen["firstChartTop"], "the alerts table must come before the charts"
    assert len(seen["charts"]) == 3
    for chart in seen["charts"]:
        assert chart["loaded"] and chart["height"] > 100 and chart["left"] >= 0 and chart["right"] <= width, chart
    assert not seen["brokenLinks"]
    assert not seen["wrapped"], f"values wrapped at {width} px: {seen['wrapped']}"


def test_screenshots_for_the_docs(chromium: object, page: Path, tmp_path: Path) -> None:
    target = Path(os.environ.get("KEYTRAIL_SCREENSHOTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    for width, height in ((420, 1600), (1400, 1800)):
        shot = browser.screenshot(chromium, page, target / f"report-{width}.png", width, height)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
