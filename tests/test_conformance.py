"""Conformance over the whole query tree, and proof that the loader rejects malformed pairs."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import cases, catalog, events
from pipeline.engine import Engine

QUERIES = catalog.load()
DETECTIONS = [q for q in QUERIES if q.kind == "detections"]
EXPECTED_DETECTIONS = {
    "access_denied_storm",
    "kms_context_scanning",
    "kms_context_schema_break",
    "kms_cross_account_use",
    "kms_decrypt_volume_spike",
    "kms_invalid_ciphertext_burst",
    "kms_key_deletion_or_disable",
    "kms_key_policy_exposure",
}

# Numbers compared with something, and interval literals, are thresholds: they belong in params.
_THRESHOLD = re.compile(r"(?:[<>]=?|=|<>|!=)\s*-?(\d+(?:\.\d+)?)|\binterval\b", re.IGNORECASE)
_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", re.DOTALL)


# The summaries pipeline.analysis and the example pickers pipeline.query_examples run: SQL + YAML like the rest.
EXPECTED_ANALYSIS = {
    "totals",
    "calls_per_hour",
    "errors_per_hour",
    "top_principals",
    "top_keys",
    "top_secrets",
    "context_cardinality",
    "principal_calls",
    "principal_sources",
    "principal_resources",
    "example_principal",
    "example_key",
    "example_secret",
    "example_source_ip",
    "example_event_id",
    "latest_event_time",
    "log_coverage",
}


def test_the_kms_detection_set_is_complete() -> None:
    assert {q.id for q in DETECTIONS} >= EXPECTED_DETECTIONS


def test_every_kind_is_in_the_tree_and_the_analysis_queries_are_complete() -> None:
    assert {q.kind for q in QUERIES} == set(catalog.KINDS)
    assert {q.id for q in QUERIES if q.kind == "analysis"} >= EXPECTED_ANALYSIS


@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_pair_is_consistent(query: catalog.Query) -> None:
    assert query.id == query.sql_path.stem == query.yml_path.stem
    assert query.sql_path.parent.is_relative_to(catalog.default_queries_dir() / query.kind)
    assert {p.name for p in query.params} == query.sql_names - catalog.BUILTINS
    for case in query.tests:
        for spec in case.events:
            assert (cases.default_fixtures_dir() / f"{spec.base}.json").is_file(), f"{case.name}: {spec.base}"
    if query.kind == "detections":
        assert any(c.firing for c in query.tests) and any(not c.firing for c in query.tests)
        assert query.attack and query.runbook and query.false_positives


@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_sql_has_no_literal_thresholds(query: catalog.Query) -> None:
    code = _STRINGS_AND_COMMENTS.sub("''", query.sql)
    offending = [m.group(0) for m in _THRESHOLD.finditer(code) if m.group(1) not in ("0", "1")]
    assert not offending, f"{query.sql_path.name}: literal threshold(s) {offending}: make them $params"


@pytest.mark.parametrize("query", DETECTIONS, ids=[q.id for q in DETECTIONS])
def test_detection_output_has_the_alert_columns(query: catalog.Query) -> None:
    since = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    with Engine.from_table(events.EVENTS_SCHEMA.empty_table(), since=since, until=since + query.window) as engine:
        schema = engine.run(query).schema
    names = set(schema.names)
    for column in (*query.dedup, "first_seen", "last_seen", "event_count"):
        assert column in names, f"{query.id} output lacks {column}"
    assert pa.types.is_timestamp(schema.field("first_seen").type)
    assert pa.types.is_timestamp(schema.field("last_seen").type)
    assert pa.types.is_integer(schema.field("event_count").type)
    for column in ("principal_arn", "resource_arn", "account_id", "region", "severity"):
        if column in names:
            assert pa.types.is_string(schema.field(column).type), f"{query.id}.{column} must be text"


# --- the loader rejects malformed pairs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_change", "yml_change", "stem", "message"),
    [
        (None, lambda y: y + "owner: secops\n", "tiny", "unknown key 'owner'"),
        (None, None, "renamed", "id 'tiny' must equal the file stem 'renamed'"),
        (lambda s: s.replace("$min_events", "3"), None, "tiny", "params min_events declared but never used"),
        (lambda s: s.replace("<> $key_ref", "<> $key_name"), None, "tiny", r"\$key_name used in tiny.sql but not"),
        (None, lambda y: y.split("  - name: quiet")[0], "tiny", "needs at least one quiet case"),
        (None, lambda y: y.replace("expect: [{event_count: 3}]", "expect: []"), "tiny", "at least one firing case"),
        (None, lambda y: y.replace("runbook: Look at it.\n", ""), "tiny", "missing required key 'runbook'"),
    ],
)
def test_malformed_pairs_are_rejected(
    tmp_path: Path, sql_change: object, yml_change: object, stem: str, message: str
) -> None:
    from tests.test_catalog import SQL, YML, write_pair

    sql = sql_change(SQL) if sql_change else SQL  # type: ignore[operator]
    yml = yml_change(YML) if yml_change else YML  # type: ignore[operator]
    write_pair(tmp_path, stem=stem, sql=sql, yml=yml)
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.load("detections", tmp_path)


def test_the_threshold_check_catches_literals() -> None:
    code = "-- why\nSELECT 1 FROM events WHERE n > 20 AND x = 'a >= 5' AND t > now() - INTERVAL 1 HOUR AND y = 0"
    stripped = _STRINGS_AND_COMMENTS.sub("''", code)
    found = [m.group(0) for m in _THRESHOLD.finditer(stripped) if m.group(1) not in ("0", "1")]
    assert found == ["> 20", "INTERVAL"]
