"""What each part of `pipeline` may import: the layering the README's layout section describes.

Read from the source (ast), so a violation is found without importing anything. Lower layers never import
upwards: the leaves (times, safe_text, settings, aws, callers, s3) import no other keytrail module but `times`;
`events` sits on them; the `lake` package sees only events and the leaves; `alerting` never reaches into the
lake's storage, the engine, ingest or presentation; nothing in `pipeline` imports `pipeline.cli` or `flows`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAVES = (
    "pipeline.times",
    "pipeline.safe_text",
    "pipeline.settings",
    "pipeline.aws",
    "pipeline.callers",
    "pipeline.sql_files",
    "pipeline.duckdb_session",
)

CATALOG = ("pipeline.catalog", "pipeline.query_spec", "pipeline.query", "pipeline.params", "pipeline.validation")

# module prefix -> the keytrail modules (prefixes) it may import
ALLOWED: dict[str, tuple[str, ...]] = {
    **{leaf: ("pipeline.times",) for leaf in LEAVES},
    "pipeline.duckdb_session": ("pipeline.sql_files",),  # every session defines the shared macros
    "pipeline.s3": ("pipeline.times", "pipeline.ingest_failures"),
    # the failure model is a leaf the decoder shares with ingest: one mapping of decode errors to bad records
    "pipeline.ingest_failures": ("pipeline.times",),
    "pipeline.record_split": ("pipeline.ingest_failures",),
    "pipeline.events": ("pipeline.times", "pipeline.ingest_failures", "pipeline.record_split"),
    "pipeline.lake": ("pipeline.lake", "pipeline.events", *LEAVES),
    **{
        name: (
            "pipeline.ingest",
            "pipeline.ingest_workers",
            "pipeline.ingest_failures",
            "pipeline.lake",
            "pipeline.events",
            "pipeline.s3",
            *LEAVES,
        )
        for name in ("pipeline.ingest", "pipeline.ingest_workers")
    },
    # notification-driven ingest: parsing and the SQS edge sit beside s3; the drain feeds ingest's entry point
    "pipeline.notifications": ("pipeline.s3", *LEAVES),
    "pipeline.sqs_queue": LEAVES,
    "pipeline.queue_report": ("pipeline.ingest", "pipeline.notifications", "pipeline.sqs_queue", *LEAVES),
    "pipeline.queue_ingest": (
        "pipeline.ingest",
        "pipeline.notifications",
        "pipeline.sqs_queue",
        "pipeline.queue_report",
        "pipeline.events",
        *LEAVES,
    ),
    **{name: (*CATALOG, "pipeline.alerting.alert", *LEAVES) for name in CATALOG},
    "pipeline.engine": (*CATALOG, "pipeline.events", "pipeline.lake", *LEAVES),
    # digest chains and log hashes: reads trails (s3) and records its verdicts in the lake, nothing above
    "pipeline.integrity": ("pipeline.integrity", "pipeline.s3", "pipeline.lake", "pipeline.ingest_failures", *LEAVES),
    "pipeline.cases": (
        *CATALOG,
        "pipeline.engine",
        "pipeline.detect",
        "pipeline.alerting.alert",
        "pipeline.events",
        *LEAVES,
    ),
    "pipeline.detect": (*CATALOG, "pipeline.engine", "pipeline.alerting.alert", *LEAVES),
    # tuning: the file and its effects are judged against the catalog; findings carry the exception
    "pipeline.tuning": ("pipeline.tuning", *CATALOG, "pipeline.alerting.alert", *LEAVES),
    # names: a table in the lake, filled from the trail through the engine, from AWS or a CSV
    "pipeline.names": ("pipeline.names", "pipeline.engine", "pipeline.alerting.alert", *LEAVES),
    # the findings of a run: detections, then tuning, then names
    "pipeline.findings": (*CATALOG, "pipeline.detect", "pipeline.tuning", "pipeline.names", "pipeline.alerting.alert"),
    "pipeline.alerting": (
        "pipeline.alerting",
        "pipeline.catalog",  # the already-loaded detections give the re-alert policy
        *LEAVES,
    ),
}
# Prefixes no module under `pipeline` (outside the prefix itself) may import. The CLI is an entry point: its
# `demo` and `serve` commands import the flows inside the command, never at module import.
NEVER_FROM_LIBRARY = ("pipeline.cli", "flows", "prefect")
ENTRY_POINTS = {"flows": "pipeline.cli", "prefect": "pipeline.cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline import lake` imports pipeline.lake: name the submodule, not the package
            if node.module in ("pipeline", "pipeline.alerting", "pipeline.lake"):
                found.update(f"{node.module}.{a.name}" for a in node.names if not a.name.startswith("__"))
            else:
                found.add(node.module)
    return found


def _keytrail(name: str) -> bool:
    return name == "pipeline" or name.startswith(("pipeline.", "flows"))


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


LIBRARY = sorted((ROOT / "pipeline").rglob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_what_its_layer_allows(path: Path) -> None:
    module = _module_name(path)
    imported = _imports(path)
    for prefix in NEVER_FROM_LIBRARY:
        exempt = ENTRY_POINTS.get(prefix)
        if not _within(module, prefix) and not (exempt and _within(module, exempt)):
            assert not [n for n in imported if _within(n, prefix)], f"{module} imports {prefix}"
    rule = next((p for p in sorted(ALLOWED, key=len, reverse=True) if _within(module, p)), None)
    if rule is None:
        return
    upward = sorted(n for n in imported if _keytrail(n) and not any(_within(n, allowed) for allowed in ALLOWED[rule]))
    assert not upward, f"{module} ({rule} layer) imports {upward}; allowed: {ALLOWED[rule]}"


def test_the_rules_see_real_imports() -> None:
    # The scan reads `from pipeline import x` as pipeline.x, or every rule above would pass vacuously.
    assert "pipeline.events" in _imports(ROOT / "pipeline" / "lake" / "files.py")
    assert "pipeline.times" in _imports(ROOT / "pipeline" / "alerting" / "alert.py")
