"""Every command in docs/ runs exactly as printed: the bash blocks of docs/*.md, executed one by one with bash
in a workspace laid out like a checkout after `uv run keytrail demo` (./demo-lake and ./lake = the simulated
analyst lake,
notebooks/ copied; `uv run` finds the project through UV_PROJECT). A few commands start long-running servers,
clusters or install packages at run time: they are listed in NOT_RUN with the reason, and the list must match.

With KEYTRAIL_SCREENSHOTS=DIR the executed notebooks are also rendered (nbconvert) and screenshotted in headless
Chromium for docs/img/.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import browser
from tests.analyst_lake import AnalystLake, analyst_lake_fixture

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
analyst_lake = pytest.fixture(scope="session")(analyst_lake_fixture)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("docs")]

PAPERMILL = (
    "uv run --with papermill papermill notebooks/investigate.ipynb build/investigate-critical.ipynb -p lake ./demo-lake"
)
NOT_RUN: dict[str, str] = {
    "uv run prefect server start --host 127.0.0.1": "a long-running server (tests/test_serve.py runs one)",
    "export PREFECT_API_URL=http://127.0.0.1:4200/api": "sets up the serve session below",
    "export KEYTRAIL_LAKE=/data/keytrail-lake KEYTRAIL_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:keytrail": (
        "sets up the serve session below"
    ),
    "uv run keytrail serve s3://my-org-trail/cloudtrail --every 5m --horizon 2h": "serves until stopped",
    "uv run prefect deployment run keytrail-pipeline/keytrail-pipeline": "needs the served deployments",
    "uv run prefect deployment run keytrail-backfill/keytrail-backfill -p since=2024-05-01 -p until=2024-05-31": (
        "needs the served deployments"
    ),
    "pip install 'keytrail[dask]'": "installs into the caller's Python",
    "dask scheduler": "a long-running cluster scheduler",
    "dask worker tcp://10.0.0.5:8786 --nthreads 1 --nworkers auto": "a cluster worker on another machine",
    "uv run keytrail serve s3://my-org-trail --task-runner dask --dask-address tcp://10.0.0.5:8786": (
        "serves until stopped, on a cluster"
    ),
    "KEYTRAIL_LAKE=./demo-lake uv run --with jupyterlab jupyter lab notebooks/": "an interactive server",
    "KEYTRAIL_LAKE=s3://my-org-lake/keytrail uv run keytrail serve s3://my-org-trail --task-runner dask "
    "--dask-address tcp://keytrail-ingest-scheduler:8786": "serves until stopped, on a Kubernetes cluster",
    "aws s3api put-bucket-notification-configuration --bucket my-trail-bucket --notification-configuration "
    '\'{"QueueConfigurations": [{"QueueArn": "\'$QUEUE_ARN\'", "Events": ["s3:ObjectCreated:*"],\n'
    '    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".json.gz"}]}}}]}\'': (
        "configures a real bucket (tests/test_queue_ingest.py configures moto's)"
    ),
    "keytrail ingest sqs://sqs.us-east-1.amazonaws.com/123456789012/trail-events --lake /data/lake": (
        "a real SQS queue (tests/test_queue_ingest.py drains moto's)"
    ),
    "keytrail ingest --queue trail-events --lake /data/lake --follow": "polls a real SQS queue until stopped",
    "keytrail ingest s3://my-trail-bucket --lake /data/lake --since \"$(date -u -d '-2 days' +%F)\" --until "
    '"$(date -u +%F)"': "a real trail bucket (the listing backstop; tests/test_queue_ingest.py runs it on moto)",
    PAPERMILL: "installs papermill at run time (the parameters cell it fills is run by tests/test_notebooks.py)",
}


def commands(path: Path) -> list[str]:
    """The commands of a markdown file's bash blocks: continuation lines joined, comments dropped."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        pending = ""
        for line in joined.splitlines():
            if not pending and line.lstrip().startswith("#"):
                continue  # a comment line (its apostrophes are prose, not quotes)
            text = pending + ("\n" if pending else "") + line
            if _unclosed(text):  # a quoted SQL statement or JSON document spans lines
                pending = text
                continue
            pending = ""
            command = re.sub(r"\s+#[^'\"]*$", "", text).strip()
            if command and not command.startswith("#"):
                found.append(command)
    return found


def _unclosed(text: str) -> bool:
    """A quote (single or double, as the shell reads them) is still open at the end of `text`."""
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


ALL = [(path.name, command) for path in DOCS for command in commands(path)]


def test_the_not_run_list_names_only_commands_in_the_docs() -> None:
    assert set(NOT_RUN) <= {command for _, command in ALL}
    assert len([c for _, c in ALL if c not in NOT_RUN]) >= 15


@pytest.fixture(scope="module")
def workspace(analyst_lake: AnalystLake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(analyst_lake.path, root / "demo-lake")
    shutil.copytree(analyst_lake.path, root / "lake")  # docs/operations.md's production lake
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    return root


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYTRAIL_", "VIRTUAL_ENV"))}
    env |= {"UV_PROJECT": str(ROOT), "PWD": str(cwd), "MPLCONFIGDIR": str(cwd / ".mpl"), "COLUMNS": "120"}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(("doc", "command"), ALL, ids=[f"{d}:{c[:60]}" for d, c in ALL])
def test_every_command_in_the_docs_runs_as_printed(workspace: Path, doc: str, command: str) -> None:
    if command in NOT_RUN:
        pytest.skip(NOT_RUN[command])
    done = _run(command, workspace)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if "jupyter-execute" in command:  # the executed copy lands in build/, never next to the original
        name = re.search(r"notebooks/(\w+)\.ipynb", command).group(1)  # type: ignore[union-attr]
        assert (workspace / "build" / f"{name}.ipynb").is_file()
        assert sorted(p.name for p in (workspace / "notebooks").iterdir()) == ["investigate.ipynb", "overview.ipynb"]


def test_notebook_screenshots(workspace: Path) -> None:
    """Run after the docs' commands (same module, same workspace): the executed notebooks as pictures."""
    target = os.environ.get("KEYTRAIL_SCREENSHOTS")
    binary = browser.chromium()
    if not target or binary is None:
        pytest.skip("set KEYTRAIL_SCREENSHOTS=DIR (and install chromium) to refresh the notebooks' screenshots")
    for name in ("overview", "investigate"):
        executed = workspace / "build" / f"{name}.ipynb"
        assert executed.is_file(), "the docs' jupyter-execute commands write it"
        done = _run(f"uv run jupyter nbconvert --to html build/{name}.ipynb --output-dir build", workspace)
        assert done.returncode == 0, done.stderr
        with browser.browser(binary) as launched:
            shot = browser.screenshot(
                launched, workspace / "build" / f"{name}.html", Path(target) / f"notebook-{name}.png", 1100, 2200
            )
        assert shot.stat().st_size > 20_000
