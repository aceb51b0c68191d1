"""Ingesting the real public CloudTrail corpus gives exactly the counts facts.json computed over it."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline import events, ingest
from pipeline import lake as lakelib

SERVICES = {"kms": events.KMS_SOURCE, "secretsmanager": events.SECRETS_SOURCE}
AUDITED = (events.KMS_SOURCE, events.SECRETS_SOURCE)
# The AWS KMS docs reuse placeholder eventIDs (facts.json: 7 ids, 12 extra events); the lake keeps one per id.
DOC_GUIDE = "awsdocs-kms-developer-guide"


@pytest.fixture(scope="module")
def facts(realdata: Path) -> dict[str, Any]:
    return json.loads((realdata / "facts.json").read_text())["per_source"]


@pytest.fixture(scope="module")
def lakes(realdata: Path, facts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One lake per source folder of the corpus, each filled by one ingest run."""
    root = tmp_path_factory.mktemp("realdata-lakes")
    built = {}
    for source in sorted(facts):
        # The facts count KMS and Secrets Manager events; CloudTrail's own events are tested in test_trail_blinding.
        report = ingest.ingest(str(realdata / "corpus" / source), root / source, event_sources=AUDITED)
        assert report.objects_quarantined == 0 and report.events_rejected == 0, source
        built[source] = root / source
    return built


def query(lake_path: Path, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.read_parquet([str(p) for p in lakelib.committed_files(lake_path)], hive_partitioning=True).create_view("e")
    return con.execute(sql, params).fetchall()


def raw_records(realdata: Path, source: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted((realdata / "corpus" / source).rglob("*.json.gz")):
        found.extend(json.loads(gzip.decompress(path.read_bytes()))["Records"])
    return found


def per_event_name(lake_path: Path, event_source: str) -> dict[str, int]:
    rows = query(lake_path, "select event_name, count(*) from e where event_source = $s group by 1", s=event_source)
    return dict(rows)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_counts_per_event_name_match_facts(lakes, facts, service: str) -> None:
    for source, lake_path in lakes.items():
        if source == DOC_GUIDE:
            continue
        assert per_event_name(lake_path, SERVICES[service]) == facts[source][service]["per_eventName"], source


def test_doc_guide_keeps_one_event_per_reused_event_id(lakes, facts, realdata: Path) -> None:
    expected = facts[DOC_GUIDE]["kms"]
    counts = per_event_name(lakes[DOC_GUIDE], events.KMS_SOURCE)
    extra = expected["duplicates_by_eventID"]["extra_events"]
    assert sum(counts.values()) == expected["events"] - extra == 55
    assert all(counts.get(name, 0) <= n for name, n in expected["per_eventName"].items())
    assert set(counts) <= set(expected["per_eventName"])
    # every kept row is one real copy (id, name and time of the same published event), never a blend
    raw = {(r["eventID"], r["eventName"], r["eventTime"]) for r in raw_records(realdata, DOC_GUIDE)}
    kept = query(lakes[DOC_GUIDE], "select event_id, event_name, strftime(event_time, '%Y-%m-%dT%H:%M:%SZ') from e")
    assert len({row[0] for row in kept}) == len(kept) == 55
    assert set(kept) <= raw


# facts.json name -> the same fact computed over the lake's columns
COLUMN_FACTS = {
    "events_with_kms_key_ref": "count(*) filter (where key_arn is not null or key_id is not null)",
    "events_without_principal_arn": "count(*) filter (where principal_arn is null)",
    "distinct_secret_refs": "(select count(distinct r) from"
    " (select unnest(secret_ids) r from e where event_source=$s))",
    "events_with_encryption_context": "count(*) filter (where encryption_context is not null)",
    "distinct_kms_key_refs": "count(distinct coalesce(key_arn, key_id))",
    "distinct_principals": "count(distinct principal_arn)",
    "events_without_identity_accountId": "count(*) filter (where principal_account_id is null)",
    "first_eventTime": "strftime(min(event_time), '%Y-%m-%dT%H:%M:%SZ')",
    "last_eventTime": "strftime(max(event_time), '%Y-%m-%dT%H:%M:%SZ')",
}
COLUMN_SQL = "select " + ", ".join(COLUMN_FACTS.values()) + " from e where event_source = $s"
GROUP_SQL = "select coalesce({column}, '(none)'), count(*) from e where event_source = $s group by 1"


def test_columns_are_populated_as_the_real_events_allow(lakes, facts) -> None:
    for source, lake_path in lakes.items():
        if source == DOC_GUIDE:
            continue
        for service, event_source in SERVICES.items():
            expected = facts[source][service]
            if not expected["events"]:
                continue
            (row,) = query(lake_path, COLUMN_SQL, s=event_source)
            got = dict(zip(COLUMN_FACTS, row, strict=True))
            assert got == {name: expected[name] for name in COLUMN_FACTS}, (source, service)
            for column, fact in (("principal_type", "per_userIdentity_type"), ("error_code", "per_errorCode")):
                counts = dict(query(lake_path, GROUP_SQL.format(column=column), s=event_source))
                assert counts == expected[fact], (source, service, column)


def test_every_column_is_filled_somewhere_in_the_corpus(lakes) -> None:
    filled: Counter[str] = Counter()
    for lake_path in lakes.values():
        counts = query(lake_path, "select " + ", ".join(f'count("{c}")' for c in events.COLUMNS) + " from e")[0]
        filled.update(dict(zip(events.COLUMNS, counts, strict=True)))
    assert [column for column in events.COLUMNS if not filled[column]] == []
    # the source_object names the file the event came from
    (row,) = query(
        lakes["invictus-aws-dataset"],
        "select count(*) from e where source_object like '%/CloudTrail/us-east-1/2023/07/10/%.json.gz'",
    )
    assert row[0] == 473


def test_whole_corpus_in_one_run_equals_the_sources_one_by_one(realdata: Path, lakes, tmp_path: Path) -> None:
    report = ingest.ingest(str(realdata / "corpus"), tmp_path / "all", event_sources=AUDITED)
    assert report.objects_read == 101 and report.events_seen == 3286
    total = sum(query(lake_path, "select count(*) from e")[0][0] for lake_path in lakes.values())
    assert report.events_kept == total == 311 - 12 + 262  # KMS less the reused doc ids, + Secrets Manager
