"""keytrail simulate: layout, determinism, mix, decodability, incidents and look-alikes, S3 output, CLI."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from pipeline import events
from pipeline.aws import client as make_client
from pipeline.cli import app
from pipeline.simulate import DEFAULT_INCIDENTS, MANIFEST, SimulationResult, simulate
from pipeline.simulate.digests import PUBLIC_KEYS

# One worker builds the shared trail once (under `pytest -n 2 --dist loadgroup`).
pytestmark = pytest.mark.xdist_group("simulate")

START = dt.date(2024, 5, 1)
DAYS = 4
LOG_KEY = re.compile(
    r"^AWSLogs/(?:(?P<org>o-[a-z0-9]{10})/)?(?P<acct>\d{12})/CloudTrail/(?P<region>[a-z0-9-]+)/"
    r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P=acct)_CloudTrail_(?P=region)_(?P<stamp>\d{8}T\d{4}Z)_"
    r"[A-Za-z0-9]{16}\.json\.gz$"
)
DIGEST_KEY = re.compile(
    r"^AWSLogs/(?:o-[a-z0-9]{10}/)?(?P<acct>\d{12})/CloudTrail-Digest/(?P<region>[a-z0-9-]+)/\d{4}/\d{2}/\d{2}/"
    r"(?P=acct)_CloudTrail-Digest_(?P=region)_[a-z-]+_[a-z0-9-]+_\d{8}T\d{6}Z\.json\.gz$"
)


def _objects(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _records(objects: dict[str, bytes]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, data in objects.items():
        if LOG_KEY.match(key):
            found.extend((key, record) for record in json.loads(gzip.decompress(data))["Records"])
    return found


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationResult, dict[str, bytes]]:
    """One organization trail with every incident, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trail")
    result = simulate(str(root), days=DAYS, seed=11, start=START, events_per_day=4000)
    return root, result, _objects(root)


@pytest.fixture(scope="module")
def records(trail: tuple[Path, SimulationResult, dict[str, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    return _records(trail[2])


def test_same_seed_gives_the_same_bytes_in_one_or_two_processes(tmp_path: Path) -> None:
    small = {"days": 2, "start": START, "events_per_day": 800, "accounts": 2, "regions": ("us-east-1",)}
    simulate(str(tmp_path / "a"), seed=5, **small)
    simulate(str(tmp_path / "b"), seed=5, workers=2, **small)
    simulate(str(tmp_path / "c"), seed=6, **small)
    first, again, other = (_objects(tmp_path / name) for name in "abc")
    assert first == again
    assert first.keys() != other.keys()


def test_org_trail_layout(trail: tuple[Path, SimulationResult, dict[str, bytes]], records: list) -> None:
    _, result, objects = trail
    logs = {key: LOG_KEY.match(key) for key in objects if "/CloudTrail/" in key}
    assert all(logs.values()), [key for key, match in logs.items() if not match][:3]
    digests = [key for key in objects if "/CloudTrail-Digest/" in key and not key.endswith(".metadata.json")]
    # A folder has no S3 metadata: each chain's newest digest carries its signature in a sidecar.
    sidecars = [key for key in objects if key.endswith(".metadata.json")]
    assert all(DIGEST_KEY.match(key) for key in digests)
    assert len(logs) == result.files and len(digests) == result.digest_files == DAYS * 4 * 2 * 24
    assert sorted(key.removesuffix(".metadata.json") for key in sidecars) == sorted(
        key for key in digests if f"{START + dt.timedelta(days=DAYS - 1):%Y%m%d}T235959Z" in key
    )
    # the manifest and the signing key's ListPublicKeys response sit outside AWSLogs/
    assert set(objects) == set(logs) | set(digests) | set(sidecars) | {MANIFEST, PUBLIC_KEYS}
    assert {m["org"] for m in logs.values()} == {result.org_id}
    assert {m["acct"] for m in logs.values()} == set(result.accounts) and len(result.accounts) == 4
    assert {m["region"] for m in logs.values()} == {"us-east-1", "eu-west-1"}
    # Each record sits in its account's and region's file for its day and 5-minute window.
    for key, record in records:
        m = logs[key]
        assert record["recipientAccountId"] == m["acct"]
        assert record["eventTime"][:10] == f"{m['y']}-{m['m']}-{m['d']}"
        minute = int(record["eventTime"][11:13]) * 60 + int(record["eventTime"][14:16])
        window = int(m["stamp"][9:11]) * 60 + int(m["stamp"][11:13])
        assert window <= minute < window + 5
        if record["eventSource"] != "iam.amazonaws.com":  # global service: us-east-1 whatever the region
            assert record["awsRegion"] == m["region"]
    # Hourly digests list every log file exactly once.
    listed = [f["s3Object"] for key in digests for f in json.loads(gzip.decompress(objects[key]))["logFiles"]]
    assert sorted(listed) == sorted(logs)


def test_single_account_layout(tmp_path: Path) -> None:
    result = simulate(str(tmp_path), days=1, seed=3, start=START, events_per_day=500, org=False,
                      incidents=("key_deletion",))  # fmt: skip
    keys = [key for key in _objects(tmp_path) if key.startswith("AWSLogs/")]
    assert result.org_id is None and len(result.accounts) == 1
    assert keys and all(key.startswith(f"AWSLogs/{result.accounts[0]}/CloudTrail") for key in keys)
    assert all(LOG_KEY.match(key) for key in keys if "/CloudTrail/" in key)
    assert {r["recipientAccountId"] for _, r in _records(_objects(tmp_path))} == {result.accounts[0]}


def test_kms_and_secrets_manager_are_about_a_third(tmp_path: Path) -> None:
    result = simulate(str(tmp_path), days=1, seed=4, start=START, events_per_day=6000, incidents=())
    counted = collections.Counter(r["eventSource"] for _, r in _records(_objects(tmp_path)))
    assert sum(counted.values()) == result.events
    assert counted["kms.amazonaws.com"] == result.kms_events
    assert counted["secretsmanager.amazonaws.com"] == result.secrets_events > 0
    share = (result.kms_events + result.secrets_events) / result.events
    assert 0.28 <= share <= 0.40, share
    assert len(counted) >= 10  # s3, ec2, sts, iam, ssm, lambda, logs, ...
    assert 0.8 * 6000 <= result.events <= 1.2 * 6000


def test_kms_only_mode(tmp_path: Path) -> None:
    result = simulate(str(tmp_path), days=1, seed=4, start=START, events_per_day=3000, kms_only=True,
                      accounts=1, regions=("us-east-1",))  # fmt: skip
    sources = {r["eventSource"] for _, r in _records(_objects(tmp_path))}
    assert sources == {"kms.amazonaws.com", "secretsmanager.amazonaws.com"}
    assert result.kms_events + result.secrets_events == result.events


def test_every_record_normalizes(trail: tuple[Path, SimulationResult, dict[str, bytes]], records: list) -> None:
    _, _, objects = trail
    sources = {record["eventSource"] for _, record in records}
    rows = []
    for key, data in objects.items():
        if LOG_KEY.match(key):
            decoded = events.rows_from_log(gzip.decompress(data), key, sources)
            assert decoded.rejected == [] and len(decoded.rows) == decoded.seen
            rows.extend(decoded.rows)
    assert len(rows) == len(records)
    table = events.normalize_many([r for _, r in records if r["eventSource"] == "kms.amazonaws.com"])
    crypto = table.filter(pc.is_in(table["event_name"], pa.array(["Decrypt", "GenerateDataKey"])))
    assert crypto.column("key_arn").null_count == 0  # also for Decrypts that name the key only in resources[]
    decrypts_without_key_id = [
        r for _, r in records if r["eventName"] == "Decrypt" and "keyId" not in (r["requestParameters"] or {})
    ]
    assert decrypts_without_key_id and all(
        r["resources"][0]["type"] == "AWS::KMS::Key" for r in decrypts_without_key_id
    )
    kinds = collections.Counter(r["userIdentity"].get("type") for _, r in records)
    assert {"AssumedRole", "IAMUser", "AWSService", None} <= set(kinds)
    assert all(r["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"] in ("false", "true")
               for _, r in records if r["userIdentity"].get("type") == "AssumedRole")  # fmt: skip


def test_incidents_are_recorded_with_their_events(trail: tuple[Path, SimulationResult, dict[str, bytes]],
                                                  records: list) -> None:  # fmt: skip
    root, result, _ = trail
    assert [i.name for i in result.incidents] == list(DEFAULT_INCIDENTS)
    by_id = {record["eventID"]: record for _, record in records}
    assert len(by_id) == len(records)  # eventIDs are unique
    last_day = START + dt.timedelta(days=DAYS - 1)
    hours = [incident.start.hour for incident in result.incidents]
    assert len(set(hours)) == len(hours)  # one incident per hour: a one-hour window catches each
    for incident in result.incidents:
        assert incident.start.date() == last_day and incident.start.hour == incident.end.hour
        assert incident.event_ids and all(event_id in by_id for event_id in incident.event_ids)
        for event_id in incident.event_ids:
            text = json.dumps(by_id[event_id])
            if incident.principal_arn:
                assert by_id[event_id]["userIdentity"]["arn"] == incident.principal_arn
            if incident.resource_arn:
                assert incident.resource_arn in text, (incident.name, text)
    manifest = json.loads((root / MANIFEST).read_text())
    assert [i["name"] for i in manifest["incidents"]] == list(DEFAULT_INCIDENTS)
    assert manifest["incidents"][0]["event_ids"] == result.incidents[0].event_ids
    # Look-alikes and incidents never share a principal, nor a role.
    benign = {arn for b in result.benign for arn in (b.principal_arn, b.session_issuer_arn) if arn}
    assert not any(i.is_principal(arn) for i in result.incidents for arn in benign)


def _hourly(records: list, arn: str, names: tuple[str, ...]) -> collections.Counter[tuple[str, int]]:
    return collections.Counter(
        (r["eventTime"][:10], int(r["eventTime"][11:13])) for _, r in records
        if r["userIdentity"].get("arn") == arn and r["eventName"] in names and "errorCode" not in r
    )  # fmt: skip


def test_decrypt_spike_is_twenty_times_the_busiest_normal_hour(trail: tuple, records: list) -> None:
    _, result, _ = trail
    spike = result.incident("decrypt_spike")
    hourly = _hourly(records, spike.principal_arn, ("Decrypt",))
    day = spike.start.date().isoformat()
    normal = [count for (d, _), count in hourly.items() if d != day]
    same_hour = [count for (d, h), count in hourly.items() if d != day and h == spike.start.hour]
    assert hourly[(day, spike.start.hour)] >= 20 * max(normal)
    assert max(same_hour, default=0) <= 0.05 * hourly[(day, spike.start.hour)]


def test_context_scanning_against_a_two_or_three_tenant_baseline(trail: tuple, records: list) -> None:
    _, result, _ = trail
    scan = result.incident("context_scanning")
    tenants: dict[bool, set[str]] = {True: set(), False: set()}
    for _, r in records:
        if r["userIdentity"].get("arn") == scan.principal_arn and r["eventSource"] == "kms.amazonaws.com":
            tenants[r["eventID"] in scan.event_ids].add(r["requestParameters"]["encryptionContext"]["tenant_id"])
    assert len(tenants[False]) <= 3 and len(tenants[True]) >= 50


def test_lookalikes_are_regular(trail: tuple, records: list) -> None:
    _, result, _ = trail
    actors = {b.name: b for b in result.benign}
    # The nightly batch: same hour, same size (within a few percent) every night.
    nightly = _hourly(records, actors["nightly_batch"].principal_arn, ("Decrypt", "GenerateDataKey"))
    assert {hour for _, hour in nightly} == {2} and len(nightly) == DAYS
    assert max(nightly.values()) <= 1.1 * min(nightly.values())
    # The deploy pipeline reads the same dozen secrets on every deploy.
    deploy = actors["deploy_pipeline"].principal_arn
    reads = collections.defaultdict(set)
    for _, r in records:
        if r["userIdentity"].get("arn") == deploy and r["eventName"] == "GetSecretValue":
            reads[r["eventTime"][:13]].add(r["requestParameters"]["secretId"])
    assert len(reads) == DAYS * 3 and len({frozenset(s) for s in reads.values()}) == 1
    assert all(len(s) == 12 for s in reads.values())
    # Tenant onboarding: two new tenants on the last day, nothing else new.
    onboarding = actors["tenant_onboarding"].principal_arn
    last = (START + dt.timedelta(days=DAYS - 1)).isoformat()
    seen: dict[bool, set[str]] = {True: set(), False: set()}
    for _, r in records:
        context = (r["requestParameters"] or {}).get("encryptionContext") or {}
        if r["userIdentity"].get("arn") == onboarding and "tenant_id" in context:
            seen[r["eventTime"].startswith(last)].add(context["tenant_id"])
    assert len(seen[True] - seen[False]) == 2
    # The org-internal cross-account caller is recorded in both accounts with one sharedEventID per call.
    xacct = actors["org_cross_account"].principal_arn
    copies = collections.defaultdict(set)
    for _, r in records:
        if r["userIdentity"].get("arn") == xacct and r["eventSource"] == "kms.amazonaws.com":
            copies[r["sharedEventID"]].add(r["recipientAccountId"])
    assert copies and all(len(accounts) == 2 for accounts in copies.values())
    # Sporadic denials stay single: never two from one principal in the same hour.
    denials = collections.Counter(
        (r["userIdentity"].get("arn"), r["eventTime"][:13]) for _, r in records
        if r.get("errorCode", "").startswith("AccessDenied") and not any(i.is_principal(r["userIdentity"].get("arn"))
                                                                         for i in result.incidents)
    )  # fmt: skip
    assert denials and max(denials.values()) == 1


def test_writes_to_s3_through_the_moto_server(aws: str) -> None:
    client = make_client("s3", endpoint_url=aws)
    client.create_bucket(Bucket="keytrail-sim-test")
    result = simulate("s3://keytrail-sim-test/trail", days=1, seed=2, start=START, events_per_day=300, accounts=1,
                      regions=("us-east-1",), incidents=("key_deletion",), s3_client=client)  # fmt: skip
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="keytrail-sim-test"):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    assert len(keys) == result.files + result.digest_files + 2  # + the manifest and the public keys
    outside = {f"trail/{MANIFEST}", f"trail/{PUBLIC_KEYS}"}
    assert outside <= set(keys) and all(k.startswith("trail/AWSLogs/") for k in keys if k not in outside)
    ids = set(result.incident("key_deletion").event_ids)
    found = set()
    for key in keys:
        if "/CloudTrail/" in key:
            body = client.get_object(Bucket="keytrail-sim-test", Key=key)["Body"].read()
            found |= {r["eventID"] for r in json.loads(gzip.decompress(body))["Records"]} & ids
    assert found == ids


def test_cli_simulate(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["simulate", "--out", str(out), "--days", "1", "--seed", "1", "--start", "2024-05-01",
            "--events-per-day", "300", "--incidents", "key_deletion,secrets_deletion", "--single-account"]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    manifest = json.loads((out / MANIFEST).read_text())
    assert [i["name"] for i in manifest["incidents"]] == ["key_deletion", "secrets_deletion"]
    assert manifest["org_id"] is None
    assert "key_deletion" in done.output
    bad = runner.invoke(app, ["simulate", "--out", str(out), "--incidents", "nope"])
    assert bad.exit_code == 2 and "decrypt_spike" in bad.output
    assert "Example:" in runner.invoke(app, ["simulate", "--help"]).output


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown incident"):
        simulate(str(tmp_path), days=1, seed=1, start=START, incidents=("nope",))
    with pytest.raises(ValueError, match="days"):
        simulate(str(tmp_path), days=0, seed=1, start=START)
    with pytest.raises(ValueError, match="S3 client"):
        simulate("s3://bucket/x", days=1, seed=1, start=START)
