"""The README's test command passes on a fresh clone with nothing beside it, yet CI never skips the real corpus.

The real-data tests are run in a copy of the test tree whose `../shared/realdata` is missing, empty, or (in CI)
required, and the outcome is read from pytest's own summary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def run_realdata_tests(clone: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    """pytest over tests/test_realdata.py in `clone`, whose parent may or may not hold shared/realdata."""
    (clone / "tests").mkdir(parents=True)
    for name in ("conftest.py", "test_realdata.py"):
        shutil.copy(TESTS / name, clone / "tests" / name)
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_realdata.py"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_the_corpus_the_realdata_tests_skip_and_say_why(tmp_path: Path) -> None:
    result = run_realdata_tests(tmp_path / "clone", ci=False)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in summary and "failed" not in summary and "error" not in summary, summary
    assert f"real-data corpus not found at {tmp_path / 'shared' / 'realdata'}" in result.stdout


def test_in_ci_a_missing_corpus_is_a_failure(tmp_path: Path) -> None:
    result = run_realdata_tests(tmp_path / "clone", ci=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CI=true" in result.stdout and "skipped" not in result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("ci", [False, True])
def test_a_broken_corpus_fails_loudly(tmp_path: Path, ci: bool) -> None:
    (tmp_path / "shared" / "realdata").mkdir(parents=True)  # present, but without facts.json or the logs
    result = run_realdata_tests(tmp_path / "clone", ci=ci)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error" in summary and "skipped" not in summary, summary
    assert "facts.json" in result.stdout
