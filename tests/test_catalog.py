"""catalog: discovery, strict validation and value coercion of query pairs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from pipeline import catalog

SQL = """-- Why: a tiny detection used to exercise the loader.
SELECT principal_arn, min(event_time) AS first_seen, max(event_time) AS last_seen, count(*) AS event_count
FROM events
WHERE event_time >= $since AND event_time < $until
  AND coalesce(json_extract_string(request_parameters, '$.keyId'), '') <> $key_ref
GROUP BY principal_arn
HAVING count(*) >= $min_events
"""

YML = """id: tiny
title: Tiny
severity: low
description: A tiny detection.
attack: [T1552]
window: 1h
lookback: 1d
dedup: [principal_arn]
runbook: Look at it.
false_positives: [Tests.]
params:
  min_events: {type: int, default: 3, help: Fewest events.}
  key_ref: {type: str, default: k, help: A key.}
tests:
  - name: fires
    now: 2024-05-01T10:00:00Z
    events: [{base: kms_decrypt, repeat: 3}]
    expect: [{event_count: 3}]
  - name: quiet
    since: 2024-05-01T09:00:00Z
    until: 2024-05-01T10:00:00Z
    events: []
    expect: []
"""


def write_pair(root: Path, stem: str = "tiny", sql: str = SQL, yml: str = YML, kind: str = "detections") -> Path:
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.sql").write_text(sql)
    (folder / f"{stem}.yml").write_text(yml)
    return folder / f"{stem}.sql"


def test_loads_a_valid_pair_into_a_frozen_query(tmp_path: Path) -> None:
    write_pair(tmp_path)
    (query,) = catalog.load("detections", tmp_path)
    assert query.id == "tiny" and query.kind == "detections"
    assert query.window == dt.timedelta(hours=1) and query.lookback == dt.timedelta(days=1)
    assert query.sql_names == {"since", "until", "min_events", "key_ref"}  # '$.keyId' is a JSON path, not a param
    assert [c.firing for c in query.tests] == [True, False]
    assert query.tests[0].events[0].repeat == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.title = "changed"  # type: ignore[misc]


def test_discovers_subfolders_and_both_kinds(tmp_path: Path) -> None:
    write_pair(tmp_path / "detections", stem="tiny", kind="kms")  # queries/detections/kms/tiny.*
    inv_sql = "-- Why: list events of one principal.\nSELECT * FROM events WHERE principal_arn = $principal\n"
    inv_yml = (
        "id: by_principal\ntitle: By principal\ndescription: Events of one principal.\n"
        "params:\n  principal: {type: str, required: true, help: Principal ARN.}\n"
        "next_steps: [Look at the keys it used.]\nexample: {principal: x}\n"
        "tests:\n  - name: nothing\n    now: 2024-05-01T10:00:00Z\n    params: {principal: x}\n"
        "    events: []\n    expect: []\n"
    )
    write_pair(tmp_path, stem="by_principal", sql=inv_sql, yml=inv_yml, kind="investigations")
    assert [q.id for q in catalog.load("detections", tmp_path)] == ["tiny"]
    (inv,) = catalog.load("investigations", tmp_path)
    assert inv.next_steps == ("Look at the keys it used.",)
    assert [q.id for q in catalog.load(None, tmp_path)] == ["by_principal", "tiny"]
    with pytest.raises(ValueError, match="needs parameter 'principal'"):
        inv.resolve_params({})
    assert inv.resolve_params({"principal": "arn"}) == {"principal": "arn"}


def test_every_error_of_the_tree_is_reported_with_its_file(tmp_path: Path) -> None:
    write_pair(tmp_path, stem="tiny")
    write_pair(tmp_path, stem="other", yml=YML.replace("id: tiny", "id: other").replace("title:", "titel:"))
    (tmp_path / "detections" / "lonely.sql").write_text("-- no yml\nSELECT 1")
    with pytest.raises(catalog.CatalogError) as info:
        catalog.load("detections", tmp_path)
    message = str(info.value)
    assert "other.yml:2: unknown key 'titel'" in message  # file:line: key
    assert "lonely.yml: missing" in message


def test_duplicate_yaml_keys_and_duplicate_ids_are_refused(tmp_path: Path) -> None:
    write_pair(tmp_path, yml=YML + "severity: high\n")
    with pytest.raises(catalog.CatalogError, match="duplicate key 'severity'"):
        catalog.load("detections", tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda y: y.replace("severity: low", "severity: urgent"), "severity 'urgent' must be one of"),
        (lambda y: y.replace("window: 1h", "window: soon"), "window: not a duration"),
        (lambda y: y.replace("attack: [T1552]", "attack: [credential-theft]"), "not a MITRE ATT&CK id"),
        (lambda y: y.replace("type: int, default: 3", "type: integer, default: 3"), "type 'integer' must be one of"),
        (lambda y: y.replace("default: 3,", "default: many,"), "min_events.default: expected an int"),
        (lambda y: y.replace("type: int, default: 3,", "type: int,"), "needs a default"),
        (lambda y: y.replace("type: int, default: 3,", "type: int, required: true,"), "every param needs a default"),
        (lambda y: y.replace("dedup: [principal_arn]", "dedup: []"), "dedup must list at least one item"),
        (lambda y: y.replace("    now: 2024-05-01T10:00:00Z\n", ""), "give either `now` or both"),
        (lambda y: y.replace("repeat: 3", "repeat: 0"), "repeat must be a positive integer"),
        (lambda y: y.replace("repeat: 3", "repeat: 3, every: 0s"), "every must be at least 1s"),
        (lambda y: y.replace("repeat: 3", "repeat: 3, count: 2"), "unknown key 'count'"),
        (lambda y: y.replace("    events: []\n", "    params: {nope: 1}\n    events: []\n"), "nope not declared"),
        (lambda y: y.replace("runbook: Look at it.", "runbook: ''"), "runbook must be non-empty"),
        (lambda y: y.replace("min_events: {", "since: {"), "is an engine built-in"),
    ],
)
def test_malformed_yaml_is_rejected_with_file_and_key(tmp_path: Path, change: object, message: str) -> None:
    sql_path = write_pair(tmp_path, yml=change(YML))  # type: ignore[operator]
    with pytest.raises(catalog.CatalogError, match=message) as info:
        catalog.load_pair(sql_path, kind="detections")
    assert "tiny" in str(info.value)


@pytest.mark.parametrize(
    ("change", "marker", "message"),
    [
        (
            lambda y: y.replace("repeat: 3", "repeat: 0"),
            "repeat: 0",
            "tests[0].events[0].repeat must be a positive integer",
        ),
        (
            lambda y: y.replace("key_ref: {type: str,", "key_ref: {type: str, colour: red,"),
            "colour: red",
            "params.key_ref: unknown key 'colour' (allowed: default, help, required, type)",
        ),
        (
            lambda y: y.replace("    events: []\n", "    events:\n      - base: kms_decrypt\n        with: [a, b]\n"),
            "with: [a, b]",
            "tests[1].events[0].with must be a mapping or null, got a list",
        ),
        (
            lambda y: y.replace("attack: [T1552]", "attack:\n  - T1552\n  - credential-theft"),
            "- credential-theft",
            "attack[1]: 'credential-theft' is not a MITRE ATT&CK id (T1234, T1234.001 or TA0001)",
        ),
        (  # a merged key is reported where its anchor wrote it
            lambda y: y.replace(
                "    events: []\n",
                "    events:\n      - base: kms_decrypt\n        with: &w {repeat: 0}\n"
                "      - {<<: *w, base: kms_decrypt}\n",
            ),
            "with: &w",
            "tests[1].events[1].repeat must be a positive integer",
        ),
    ],
)
def test_errors_name_the_file_line_and_key_path(tmp_path: Path, change: object, marker: str, message: str) -> None:
    yml = change(YML)  # type: ignore[operator]
    line = next(number for number, text in enumerate(yml.splitlines(), 1) if marker in text)
    sql_path = write_pair(tmp_path, yml=yml)
    with pytest.raises(catalog.CatalogError) as info:
        catalog.load_pair(sql_path, kind="detections")
    assert str(info.value) == f"{sql_path.with_suffix('.yml')}:{line}: {message}"


def test_the_public_names_are_importable_from_catalog() -> None:
    from pipeline import params, query

    assert all(hasattr(catalog, name) for name in catalog.__all__)
    assert catalog.Query is query.Query and catalog.coerce is params.coerce and catalog.BUILTINS is params.BUILTINS


def test_sql_must_start_with_a_why_comment_and_use_named_parameters(tmp_path: Path) -> None:
    with pytest.raises(catalog.CatalogError, match="must start with a comment"):
        catalog.load_pair(write_pair(tmp_path, sql=SQL.split("\n", 1)[1]), kind="detections")
    with pytest.raises(catalog.CatalogError, match="positional parameter"):
        catalog.load_pair(write_pair(tmp_path, sql=SQL.replace("$min_events", "?")), kind="detections")


def test_resolve_params_applies_defaults_and_refuses_unknown_names(tmp_path: Path) -> None:
    query = catalog.load_pair(write_pair(tmp_path), kind="detections")
    assert query.resolve_params({"min_events": "7"}) == {"min_events": 7, "key_ref": "k"}
    with pytest.raises(ValueError, match="has no parameter"):
        query.resolve_params({"min_event": 7})
    with pytest.raises(ValueError, match=r"tiny\.min_events"):
        query.resolve_params({"min_events": "lots"})


def test_default_tree_is_found_relative_to_the_repo() -> None:
    assert catalog.default_queries_dir() == Path(__file__).resolve().parents[1] / "queries"


def test_realert_is_a_per_detection_duration_with_the_setting_as_fallback() -> None:
    import datetime as dt

    from pipeline import catalog as cat

    queries = cat.load("detections")
    policy = cat.realert_intervals(queries, dt.timedelta(hours=6))
    assert policy["secrets_rotation_failure"] == dt.timedelta(hours=24)
    assert policy["*"] == dt.timedelta(hours=6)
    assert "kms_decrypt_volume_spike" not in policy  # no `realert:` in its YAML: the setting applies
