"""`pipeline` never imports prefect: the library must work (and stay light) without the orchestrator."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_importing_every_pipeline_module_does_not_import_prefect() -> None:
    # A fresh interpreter: this test process has prefect loaded already by other tests.
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import pipeline
        names = ["pipeline"] + [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        leaked = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
        assert not leaked, f"pipeline imported prefect modules: {leaked[:5]}"
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # The walk really imported the library, not just the empty package.
    assert int(result.stdout.strip()) >= 5
