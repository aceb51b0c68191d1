"""Both notebooks run headless (nbclient, the venv's python3 kernel) against the simulated lake without errors.

Parameters are injected papermill-style: assignments appended to the cell tagged `parameters`. The principal and
default-alert paths of investigate.ipynb differ only in `analysis.subject` (tests/test_analysis.py), so one
kernel run covers the notebook's cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.analyst_lake import AnalystLake, analyst_lake_fixture

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
analyst_lake = pytest.fixture(scope="session")(analyst_lake_fixture)


def execute(name: str, **params: object) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{key} = {json.dumps(value)}" for key, value in params.items())
    # Raises CellExecutionError (with the traceback) on the first failing cell.
    NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=False).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[dict[str, object]]:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.parametrize("name", ["overview.ipynb", "investigate.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    # They call the library and define nothing: no functions or classes of their own.
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines())


def test_overview_runs_and_plots(analyst_lake: AnalystLake) -> None:
    notebook = execute("overview.ipynb", lake=str(analyst_lake.path), since="2024-05-01", until="2024-05-09")
    produced = outputs(notebook)
    images = [o for o in produced if "image/png" in o.get("data", {})]  # type: ignore[operator]
    assert len(images) >= 4  # calls per hour, principals, keys, errors, context cardinality
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in produced)  # type: ignore[union-attr]
    assert "'events': " in text
    assert any(alert_id[:8] in text or "access_denied_storm" in text for alert_id in analyst_lake.alert_ids)


def test_investigate_runs_for_an_alert(analyst_lake: AnalystLake) -> None:
    notebook = execute("investigate.ipynb", lake=str(analyst_lake.path), alert_id=analyst_lake.alert_ids[0][:12])
    produced = outputs(notebook)
    assert any("image/png" in o.get("data", {}) for o in produced)  # type: ignore[operator]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in produced)  # type: ignore[union-attr]
    assert analyst_lake.alert_ids[0] in text
