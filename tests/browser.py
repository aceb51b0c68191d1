"""A real browser for the HTML report: Debian's headless Chromium driven by playwright (no browser download:
playwright launches the system `chromium`). Used by the report's layout test and for the docs' screenshots.

`measure` returns what a reader at a given width sees, computed in the page: whether anything overflows
sideways, where the alerts table and the first chart sit, whether every chart loaded and fits, whether every
in-page link has a target, and which numbers, times or IP addresses wrapped onto a second line.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome")

MEASURE = """() => {
  const W = window.innerWidth;
  const lines = el => { const r = document.createRange(); r.selectNodeContents(el);
    return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; };
  const triage = document.getElementById('triage');
  const imgs = [...document.querySelectorAll('figure img')];
  const ip = /^\\d+\\.\\d+\\.\\d+\\.\\d+$/;
  return {
    width: W,
    scrollWidth: document.documentElement.scrollWidth,
    triageTop: triage ? triage.getBoundingClientRect().top : null,
    triageOverflow: triage ? triage.parentElement.scrollWidth - triage.parentElement.clientWidth : null,
    triageLinks: triage ? triage.querySelectorAll('a').length : 0,
    firstChartTop: imgs.length ? imgs[0].getBoundingClientRect().top : null,
    charts: imgs.map(i => { const b = i.getBoundingClientRect();
      return {width: b.width, height: b.height, left: b.left, right: b.right,
              loaded: i.complete && i.naturalWidth > 0}; }),
    brokenLinks: [...document.querySelectorAll('a[href^="#"]')]
      .filter(a => !document.getElementById(a.getAttribute('href').slice(1))).map(a => a.getAttribute('href')),
    wrapped: [...document.querySelectorAll('td')]
      .filter(td => (td.matches('.num, .time') || ip.test(td.textContent.trim())) && td.textContent.trim())
      .filter(td => lines(td) > 1).map(td => td.textContent.trim()).slice(0, 20),
  };
}"""


def chromium() -> str | None:
    """The system browser's path, or None when none is installed."""
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


@contextmanager
def browser(binary: str) -> Iterator[Any]:
    """A headless Chromium (playwright over the system binary); closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


def measure(launched: Any, page_path: Path, width: int, height: int = 900) -> dict[str, Any]:
    """Layout facts of the page at `width` CSS pixels (see MEASURE)."""
    page = launched.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(page_path.as_uri())
        return page.evaluate(MEASURE)
    finally:
        page.close()


def screenshot(launched: Any, page_path: Path, out: Path, width: int, height: int) -> Path:
    """A PNG of the top `height` pixels of the page at `width` (the whole page when it is shorter)."""
    page = launched.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(page_path.as_uri())
        page.screenshot(path=str(out), full_page=False)
    finally:
        page.close()
    return out
