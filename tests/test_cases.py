"""Every YAML case of every query (detections and investigations), plus the case machinery itself."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from pipeline import cases, catalog
from pipeline.catalog import EventSpec

UTC = dt.UTC
ALL_CASES = [(q, c) for q in catalog.load() for c in q.tests]


@pytest.mark.parametrize(("query", "case"), ALL_CASES, ids=[f"{q.id}::{c.name}" for q, c in ALL_CASES])
def test_yaml_case(query: catalog.Query, case: catalog.Case) -> None:
    result = cases.run_case(query, case)
    assert result.passed, result.detail


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    merged = cases.deep_merge(base, {"a": {"c": [3], "e": None}, "d": None})
    assert merged == {"a": {"b": 1, "c": [3], "e": None}, "d": None}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}  # the base fixture is not modified


def test_expand_events_repeats_in_time_with_unique_deterministic_ids() -> None:
    start = dt.datetime(2024, 5, 1, 2, tzinfo=UTC)
    specs = [
        EventSpec(base="kms_decrypt", at=start, repeat=3, every=dt.timedelta(seconds=10), days=2),
        EventSpec(base="kms_decrypt", overrides={"eventTime": "2024-05-01T05:00:00Z", "eventName": "Encrypt"}),
        EventSpec(base="kms_decrypt"),
    ]
    default = dt.datetime(2024, 5, 1, 9, tzinfo=UTC)
    records = cases.expand_events(specs, key="q/c", default_start=default)
    assert [r["eventTime"] for r in records] == [
        "2024-05-01T02:00:00Z",
        "2024-05-01T02:00:10Z",
        "2024-05-01T02:00:20Z",
        "2024-05-02T02:00:00Z",
        "2024-05-02T02:00:10Z",
        "2024-05-02T02:00:20Z",
        "2024-05-01T05:00:00Z",
        "2024-05-01T09:00:00Z",
    ]
    assert records[6]["eventName"] == "Encrypt" and records[7]["eventName"] == "Decrypt"
    ids = [r["eventID"] for r in records]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i) for i in ids)
    assert ids == [r["eventID"] for r in cases.expand_events(specs, key="q/c", default_start=default)]
    assert ids != [r["eventID"] for r in cases.expand_events(specs, key="q/other", default_start=default)]


def test_unknown_fixture_names_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match="kms_decrypt"):
        cases.load_fixture("no_such_event")


def test_compare_rows_matches_subsets_in_any_order() -> None:
    actual = [
        {"p": "b", "n": 2, "t": dt.datetime(2024, 5, 1, 10, tzinfo=UTC), "l": ["x"]},
        {"p": "a", "n": 1, "t": dt.datetime(2024, 5, 1, 9, tzinfo=UTC), "l": []},
    ]
    expected = [{"p": "a", "t": "2024-05-01T11:00:00+02:00"}, {"p": "b", "n": 2.0, "l": ["x"]}]
    assert cases.compare_rows(expected, actual) == []
    assert cases.compare_rows([{"p": "a"}], actual) == ["unexpected output row {p: 'b'}"]
    assert cases.compare_rows([{"p": "c"}, {"p": "a"}, {"p": "b"}], actual) == ["no output row matches {p: 'c'}"]
    assert "not in the output" in cases.compare_rows([{"nope": 1}, {"p": "b"}], actual)[0]
    assert cases.compare_rows([], []) == []


def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path: Path) -> None:
    from tests.test_catalog import YML, write_pair

    wrong = YML.replace("expect: [{event_count: 3}]", "expect: [{event_count: 4}]")
    query = catalog.load_pair(write_pair(tmp_path, yml=wrong), kind="detections")
    good, quiet = (cases.run_case(q, c) for q, c in [(query, query.tests[0]), (query, query.tests[1])])
    assert quiet.passed and not quiet.firing
    assert not good.passed and good.rows == 1
    assert "no output row matches {event_count: 4}" in good.detail
    assert "event_count: 3" in good.detail and "tiny.yml" in good.detail


def test_placeholders_and_replace_in_overrides() -> None:
    from pipeline.catalog import Replace

    spec = EventSpec(
        base="kms_decrypt",
        overrides={
            "requestParameters": {"encryptionContext": Replace({"tenant": "t-{n}-{day}"})},
            "userIdentity": Replace({"type": "AWSAccount", "accountId": "444455556666"}),
        },
        repeat=2,
        days=2,
    )
    records = cases.expand_events([spec], key="k", default_start=dt.datetime(2024, 5, 1, tzinfo=UTC))
    contexts = [r["requestParameters"]["encryptionContext"] for r in records]
    assert contexts == [{"tenant": "t-0-0"}, {"tenant": "t-1-0"}, {"tenant": "t-0-1"}, {"tenant": "t-1-1"}]
    assert records[0]["requestParameters"]["encryptionAlgorithm"] == "SYMMETRIC_DEFAULT"  # merged, not replaced
    assert records[0]["userIdentity"] == {"type": "AWSAccount", "accountId": "444455556666"}  # replaced


def test_replace_tag_in_yaml(tmp_path: Path) -> None:
    from tests.test_catalog import YML, write_pair

    yml = YML.replace(
        "events: [{base: kms_decrypt, repeat: 3}]",
        "events: [{base: kms_decrypt, repeat: 3, "
        "with: {requestParameters: {encryptionContext: !replace {only: this}}}}]",
    )
    query = catalog.load_pair(write_pair(tmp_path, yml=yml), kind="detections")
    assert isinstance(query.tests[0].events[0].overrides["requestParameters"]["encryptionContext"], catalog.Replace)
    (record, *_) = cases.expand_events(
        query.tests[0].events, key="k", default_start=dt.datetime(2024, 5, 1, tzinfo=UTC)
    )
    assert record["requestParameters"]["encryptionContext"] == {"only": "this"}


_INSTALLED_PROBE = """
import json, pipeline
from pipeline import cases, catalog
queries = catalog.load()
bases = sorted({spec.base for q in queries for c in q.tests for spec in c.events})
missing = [b for b in bases if not (cases.default_fixtures_dir() / f"{b}.json").is_file()]
query = catalog.get("kms_key_deletion_or_disable")
print(json.dumps({
    "package": pipeline.__file__,
    "queries": str(catalog.default_queries_dir()),
    "fixtures": str(cases.default_fixtures_dir()),
    "bases": len(bases),
    "missing": missing,
    "passed": [cases.run_case(query, case).passed for case in query.tests],
}))
"""


def test_an_installed_copy_runs_its_cases_with_the_fixtures_it_ships(tmp_path: Path) -> None:
    """`pip install keytrail` then `keytrail test`: the wheel's layout (pyproject: `pipeline` plus the
    force-included query tree) must hold every base event a case uses; nothing may come from the repository."""
    import json
    import shutil
    import subprocess
    import sys
    import tomllib

    root = Path(__file__).resolve().parents[1]
    wheel = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    site = tmp_path / "site"
    assert "pipeline" in wheel["packages"]
    shutil.copytree(root / "pipeline", site / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "_queries"))
    for source, target in wheel["force-include"].items():
        shutil.copytree(root / source, site / target)
    probe = subprocess.run(
        [sys.executable, "-c", _INSTALLED_PROBE],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["package"]).is_relative_to(site)  # the copy, not the repository
    assert Path(found["fixtures"]).is_relative_to(Path(found["queries"]))
    assert Path(found["queries"]).is_relative_to(site)
    assert found["bases"] > 0 and found["missing"] == []
    assert found["passed"] and all(found["passed"])
