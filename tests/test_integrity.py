"""keytrail verify: signed simulated trails verify clean; each tampering is caught and named; AWS's own digest
example parses; the pieces (one gzip member, the signed string, chain breaks, backfill) on their own."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from typer.testing import CliRunner

from pipeline.aws import client as make_client
from pipeline.cli import app
from pipeline.engine import Engine
from pipeline.integrity import keys as public_keys
from pipeline.integrity.chain import ReadDigest, TrailInput, judge_trail
from pipeline.integrity.digest_file import parse_digest, sha256_hex, signed_message
from pipeline.integrity.log_hash import hash_chunks, hash_stored
from pipeline.integrity.results import Coverage, to_table
from pipeline.integrity.verify import save, verify_source
from pipeline.lake import recover
from pipeline.lake.integrity import integrity_files, write_integrity
from pipeline.s3 import list_source
from pipeline.simulate import simulate
from pipeline.simulate.digests import PUBLIC_KEYS, digest_body, fingerprint, public_keys_json, sign, signing_key
from pipeline.simulate.tamper import TAMPERINGS, tamper

pytestmark = pytest.mark.xdist_group("integrity")

START = dt.date(2024, 5, 1)
SEED = 3
# The AWS CloudTrail user guide's digest file example ("CloudTrail digest file structure"), field for field.
AWS_DIGEST_EXAMPLE = """{
  "awsAccountId": "111122223333",
  "digestStartTime": "2015-08-17T14:01:31Z",
  "digestEndTime": "2015-08-17T15:01:31Z",
  "digestS3Bucket": "S3-bucket-name",
  "digestS3Object": "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz",
  "digestPublicKeyFingerprint": "31e8b5433410dfb61a9dc45cc65b22ff",
  "digestSignatureAlgorithm": "SHA256withRSA",
  "newestEventTime": "2015-08-17T14:52:27Z",
  "oldestEventTime": "2015-08-17T14:42:27Z",
  "previousDigestS3Bucket": "S3-bucket-name",
  "previousDigestS3Object": "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T140131Z.json.gz",
  "previousDigestHashValue": "97fb791cf91ffc440d274f8190dbdd9aa09c34432aba82739df18b6d3c13df2d",
  "previousDigestHashAlgorithm": "SHA-256",
  "previousDigestSignature": "50887ccffad4c002b97caa37cc9dc626e3c680207d41d27fa5835458e066e0d3652fc4dfc30937e4d5f4cc7f796e7a258fb50a43ac427f2237f6e505d4efaf373d156e15e3b68dea9f58111d395b62628d6bd367a9024d2183b5c5f6e19466d3a996b92df705bc997b8a0e13430f241d733cf95df4e41bb6c304c3f58363043572ea57a27085639ce187e679c0d81c7519b1184fa77fb7ab0b0e40a32dace6e1eefc3995c5ae182da49b62b26398cebb52a2201a6387b75b89c83e5570bcb9bba6c34a80f2f00a1c6ebe07d1ff149eccd812dc805bb3eeff6657db32a6cb48d2d096404eb76181877bc6ebb8cd0b23f823200155b2fd8848d428e46e8456328a",
  "logFiles": [
    {
      "s3Bucket": "S3-bucket-name",
      "s3Object": "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/17/111122223333_CloudTrail_us-east-2_20150817T1445Z_9nYN7gp2eWAJHIfT.json.gz",
      "hashValue": "9bb6196fc6b84d6f075a56548feca262bd99ba3c2de41b618e5b6e22c1fc71f6",
      "hashAlgorithm": "SHA-256",
      "newestEventTime": "2015-08-17T14:52:27Z",
      "oldestEventTime": "2015-08-17T14:42:27Z"
    }
  ]
}"""  # noqa: E501


@pytest.fixture(scope="module")
def signed_trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three days of one account, two regions: a clean, signed organization trail (copied, never changed)."""
    root = tmp_path_factory.mktemp("signed") / "trail"
    simulate(str(root), days=3, seed=SEED, start=START, events_per_day=1500, accounts=1,
             regions=("us-east-1", "eu-west-1"), incidents=())  # fmt: skip
    return root


def _keys(root: Path) -> public_keys.PublicKeys:
    return public_keys.from_file(root / PUBLIC_KEYS)


def _account_root(root: Path) -> str:
    manifest = json.loads((root / "simulation.json").read_text())
    org = f"{manifest['organization_id']}/" if manifest["org_trail"] else ""
    return f"AWSLogs/{org}{manifest['accounts'][0]}/"


def test_a_clean_signed_chain_verifies(signed_trail: Path) -> None:
    report = verify_source(str(signed_trail), _keys(signed_trail))
    counts = Counter((row.kind, row.status) for row in report.rows)
    assert set(counts) == {("digest", "valid"), ("log", "valid")}
    assert counts["digest", "valid"] == 3 * 2 * 24
    assert report.logs_read == counts["log", "valid"] and report.digests_read == 3 * 2 * 24
    coverage = Coverage.of(report.rows)
    assert coverage.verified == coverage.total > 0
    assert coverage.line() == f"{coverage.total:,} of {coverage.total:,} log files verified for this period"


def test_a_day_range_reports_only_its_days_and_reads_each_log_once(signed_trail: Path) -> None:
    day = START + dt.timedelta(days=1)
    report = verify_source(str(signed_trail), _keys(signed_trail), since=day, until=day)
    assert {row.period_start.date() for row in report.rows} == {day}
    assert {row.status for row in report.rows} == {"valid"}
    logs = [row for row in report.rows if row.kind == "log"]
    assert len({row.object for row in logs}) == len(logs)
    # Digests of the days either side are read to close the chain; each log object of the day is read once,
    # plus only those of the neighbouring days that the day's digests list (none cross midnight here).
    assert report.logs_read == len(logs)


def test_each_tampering_is_detected_and_named(signed_trail: Path, tmp_path: Path) -> None:
    root = tmp_path / "trail"
    shutil.copytree(signed_trail, root)
    day = START + dt.timedelta(days=1)
    done = tamper(str(root), TAMPERINGS, seed=SEED, account_root=_account_root(root), region="us-east-1", day=day)
    assert [t.name for t in done] == list(TAMPERINGS)
    rows = verify_source(str(root), _keys(root)).rows
    by_object = {(row.kind, row.object): row for row in rows}
    # The newest of two deleted digests is named by its successor; the older one's name is lost with it.
    for tampering in done:
        row = by_object[tampering.kind, tampering.objects[-1]]
        assert row.status == tampering.expect, (tampering.name, row)
    reasons = {t.name: by_object[t.kind, t.objects[-1]].reason or "" for t in done}
    assert "SHA-256 is not the one its digest states" in reasons["modify-log"]
    assert "not in the bucket" in reasons["delete-log"]
    assert "bytes after the gzip member" in reasons["append-gzip"]
    assert "2 digests missing in a row" in reasons["delete-digests"]
    assert "never issued" in reasons["forge-digest"] and "next digest" in reasons["forge-digest"]
    # Both deleted digests are reported (aws-cli#7054 reports one), each for its own hour.
    missing = [row for row in rows if row.kind == "digest" and row.status == "missing"]
    assert len(missing) == 2 and len({row.period_start for row in missing}) == 2
    # Their log files are now listed by no digest; the forged digest's hidden log too.
    assert sum(row.status == "not covered" for row in rows) >= 3
    # Nothing outside the tampered account/region/day is flagged.
    problems = [row for row in rows if row.status != "valid"]
    assert {(row.region, row.period_start.date()) for row in problems} == {("us-east-1", day)}
    coverage = Coverage.of(rows)
    assert coverage.verified < coverage.total


def test_a_digest_signed_with_another_key_that_claims_cloudtrails_fingerprint_fails(tmp_path: Path) -> None:
    real, forger = signing_key(SEED), signing_key(SEED, "forger")
    fields = json.loads(AWS_DIGEST_EXAMPLE) | {"digestPublicKeyFingerprint": fingerprint(real)}
    body = digest_body(fields)
    digest = parse_digest(body)
    good, bad = sign(real, digest, sha256_hex(body)), sign(forger, digest, sha256_hex(body))
    keys = public_keys.from_response(json.loads(_public_keys_json(real)))
    key = fields["digestS3Object"]
    trail = lambda signature: TrailInput(  # noqa: E731
        "111122223333", "us-east-2", [ReadDigest(key, sha256_hex(body), digest, None, signature, "SHA256withRSA")], {}
    )
    assert {r.status for r in judge_trail(trail(good), keys) if r.kind == "digest"} == {"valid"}
    (row,) = [r for r in judge_trail(trail(bad), keys) if r.kind == "digest"]
    assert row.status == "modified" and "does not verify" in (row.reason or "")


def _public_keys_json(key: RSAPrivateKey) -> bytes:
    return public_keys_json(key, "2015-01-01T00:00:00Z", "2016-01-01T00:00:00Z")


def test_the_aws_user_guide_digest_example_parses() -> None:
    digest = parse_digest(AWS_DIGEST_EXAMPLE.encode())
    assert digest.awsAccountId == "111122223333"
    assert digest.end == dt.datetime(2015, 8, 17, 15, 1, 31, tzinfo=dt.UTC)
    assert digest.digestPublicKeyFingerprint == "31e8b5433410dfb61a9dc45cc65b22ff"
    assert not digest.starts_chain and digest.previousDigestHashAlgorithm == "SHA-256"
    (entry,) = digest.logFiles
    assert entry.hashValue.startswith("9bb6196f") and entry.s3Object.endswith("_9nYN7gp2eWAJHIfT.json.gz")
    # The signed string: end time, bucket/key, the digest's own hash, the previous signature, one per line.
    lines = signed_message(digest, "ab" * 32).decode().split("\n")
    assert lines == ["2015-08-17T15:01:31Z", f"S3-bucket-name/{digest.digestS3Object}", "ab" * 32,
                     digest.previousDigestSignature]  # fmt: skip
    starting = parse_digest(json.dumps(json.loads(AWS_DIGEST_EXAMPLE) | {
        "previousDigestS3Bucket": None, "previousDigestS3Object": None, "previousDigestHashValue": None,
        "previousDigestHashAlgorithm": None, "previousDigestSignature": None}).encode())  # fmt: skip
    assert starting.starts_chain and signed_message(starting, "00").endswith(b"\n00\nnull")


def test_only_the_first_gzip_member_is_the_log() -> None:
    content = b'{"Records":[]}'
    one = gzip.compress(content)
    assert hash_stored(one) == hash_chunks([one[:5], one[5:]])  # streamed in pieces: the same hash
    assert hash_stored(one).sha256 == sha256_hex(content) and hash_stored(one).trailing == 0
    assert hash_stored(one + gzip.compress(b"more")).trailing > 0  # a second member is appended data
    assert hash_stored(one + b"junk").trailing == 4
    assert hash_stored(one[:-4]).problem and hash_stored(b"plain").problem  # truncated; not gzip at all
    assert hash_stored(content, "x.json").sha256 == sha256_hex(content)  # an uncompressed object


def test_a_gap_between_two_chains_is_reported_hour_by_hour(signed_trail: Path) -> None:
    """Logging stopped at 10:00 and restarted at 13:00 (a new starting digest): hours 10-12 have no digest."""
    key = signing_key(SEED)
    keys = _keys(signed_trail)

    def digest(hour: int, previous: ReadDigest | None) -> ReadDigest:
        name = f"AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/05/02/x_CloudTrail-Digest_us-east-1_t_us-east-1_20240502T{hour:02d}5959Z.json.gz"  # noqa: E501
        fields = json.loads(AWS_DIGEST_EXAMPLE) | {
            "digestStartTime": f"2024-05-02T{hour:02d}:00:00Z", "digestEndTime": f"2024-05-02T{hour:02d}:59:59Z",
            "digestS3Object": name, "digestPublicKeyFingerprint": next(iter(keys.by_fingerprint)), "logFiles": [],
            "previousDigestS3Object": previous.key if previous else None,
            "previousDigestHashValue": previous.sha256 if previous else None,
            "previousDigestSignature": previous.signature if previous else None}  # fmt: skip
        body = digest_body(fields)
        parsed = parse_digest(body)
        return ReadDigest(name, sha256_hex(body), parsed, None, sign(key, parsed, sha256_hex(body)), "SHA256withRSA")

    nine = digest(9, digest(8, None))
    thirteen = digest(13, None)
    rows = judge_trail(TrailInput("111122223333", "us-east-1", [nine, thirteen], {}), keys)
    gap = [row for row in rows if row.status == "missing"]
    assert [row.period_start.hour for row in gap] == [10, 11, 12]
    assert "a gap" in (gap[0].reason or "")


def test_backfill_digests_cover_their_log_files(tmp_path: Path) -> None:
    """A `_backfill` digest lists a late log file an hourly digest missed; it is signed in its own metadata."""
    key = signing_key(SEED)
    log_key = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/05/02/111122223333_CloudTrail_us-east-1_20240502T1000Z_abcdefghijklmnop.json.gz"  # noqa: E501
    content = b'{"Records":[]}'
    name = "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/05/02/111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_20240502T115959Z_backfill.json.gz"  # noqa: E501
    fields = json.loads(AWS_DIGEST_EXAMPLE) | {
        "digestStartTime": "2024-05-02T11:00:00Z", "digestEndTime": "2024-05-02T11:59:59Z", "digestS3Object": name,
        "digestPublicKeyFingerprint": fingerprint(key),
        "logFiles": [{"s3Bucket": "b", "s3Object": log_key, "hashValue": sha256_hex(content), "hashAlgorithm": "SHA-256"}]}  # noqa: E501  # fmt: skip
    body = digest_body(fields)
    parsed = parse_digest(body)
    read = ReadDigest(name, sha256_hex(body), parsed, None, sign(key, parsed, sha256_hex(body)), "SHA256withRSA")
    keys = public_keys.from_response(json.loads(_public_keys_json(key)))
    rows = judge_trail(
        TrailInput("111122223333", "us-east-1", [read], {log_key: hash_stored(gzip.compress(content))}), keys
    )
    assert {(row.kind, row.status) for row in rows} == {("digest", "valid"), ("log", "valid")}


def test_verifies_an_s3_trail_with_signatures_in_object_metadata(aws: str) -> None:
    client = make_client("s3", endpoint_url=aws)
    client.create_bucket(Bucket="keytrail-verify-test")
    simulate("s3://keytrail-verify-test/trail", days=2, seed=SEED, start=START, events_per_day=300, accounts=1,
             regions=("us-east-1",), incidents=(), s3_client=client)  # fmt: skip
    keys = public_keys.load(f"s3://keytrail-verify-test/trail/{PUBLIC_KEYS}", client)  # KEYTRAIL_PUBLIC_KEYS
    report = verify_source("s3://keytrail-verify-test/trail", keys, client=client)
    assert {row.status for row in report.rows} == {"valid"} and report.digests_read == 48
    # The newest digest's signature came from its x-amz-meta-signature: delete its successor-less chain end's
    # metadata by copying it over itself without metadata, and it becomes unsigned.
    newest = max(row.object for row in report.rows if row.kind == "digest")
    client.copy_object(Bucket="keytrail-verify-test", Key=newest, MetadataDirective="REPLACE",
                       CopySource={"Bucket": "keytrail-verify-test", "Key": newest})  # fmt: skip
    again = verify_source("s3://keytrail-verify-test/trail", keys, client=client)
    assert {row.status for row in again.rows if row.object == newest} == {"unsigned"}


def test_hashes_computed_by_ingest_are_not_read_again(signed_trail: Path) -> None:
    logs = [o for o in list_source(str(signed_trail)) if o.kind == "CloudTrail"]
    known = {o.source: hash_stored(Path(o.source).read_bytes(), o.key) for o in logs}
    report = verify_source(str(signed_trail), _keys(signed_trail), known=known)
    assert report.logs_read == 0 and report.logs_shared == len(logs)
    assert {row.status for row in report.rows} == {"valid"}


def test_a_public_keys_file_that_is_not_a_response_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"Keys": []}')
    with pytest.raises(public_keys.KeyFileError, match="list-public-keys"):
        public_keys.from_file(path)


def test_results_are_committed_to_the_lake_and_a_later_verification_supersedes_them(
    signed_trail: Path, lake: Path
) -> None:
    day = START + dt.timedelta(days=1)
    first_at = dt.datetime(2024, 5, 4, 1, tzinfo=dt.UTC)
    report = verify_source(str(signed_trail), _keys(signed_trail), since=day, until=day, now=first_at)
    assert save(report, lake, first_at) == len(report.rows)
    again_at = first_at + dt.timedelta(hours=1)
    again = verify_source(str(signed_trail), _keys(signed_trail), since=day, until=day, now=again_at)
    save(again, lake, again_at)
    files = integrity_files(lake)
    assert len(files) == 2  # one per account/region/day: the first run's files were superseded
    since = dt.datetime.combine(day, dt.time(), dt.UTC)
    with Engine.for_lake(lake, since, since + dt.timedelta(days=1)) as engine:
        rows = engine.sql("SELECT kind, status, checked_at FROM integrity").to_pylist()
    assert len(rows) == len(again.rows) and {r["checked_at"] for r in rows} == {again_at}
    assert {(r["kind"], r["status"]) for r in rows} == {("digest", "valid"), ("log", "valid")}


def test_a_crash_before_the_ledger_record_leaves_no_integrity_rows(signed_trail: Path, lake: Path) -> None:
    day = START + dt.timedelta(days=1)
    report = verify_source(str(signed_trail), _keys(signed_trail), since=day, until=day)

    def crash(stage: str) -> None:
        if stage == "files-published":
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_integrity(lake, to_table(report.rows), None, checkpoint=crash)
    assert integrity_files(lake) == []  # hidden while the intent is open
    recover(lake)
    assert integrity_files(lake) == [] and not list((lake / "integrity").rglob("*.parquet"))


def test_the_verify_command_records_results_and_exits_3_when_something_failed(
    signed_trail: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    keys_file = str(signed_trail / PUBLIC_KEYS)
    clean = runner.invoke(app, ["verify", str(signed_trail), "--public-keys", keys_file, "--lake", str(tmp_path / "a")])
    assert clean.exit_code == 0, clean.output
    assert "log files verified for this period" in clean.output and integrity_files(tmp_path / "a")
    root = tmp_path / "trail"
    shutil.copytree(signed_trail, root)
    tamper(str(root), ["delete-log"], seed=SEED, account_root=_account_root(root), region="eu-west-1",
           day=START + dt.timedelta(days=1))  # fmt: skip
    broken = runner.invoke(app, ["verify", str(root), "--public-keys", keys_file, "--no-record"])
    assert broken.exit_code == 3, broken.output
    assert "what failed verification" in broken.output and "missing" in broken.output
    assert "Example: keytrail verify" in runner.invoke(app, ["verify", "--help"]).output


def test_a_local_copy_of_a_prefixed_s3_trail_still_verifies(signed_trail: Path) -> None:
    """Digests name `cloudtrail/AWSLogs/...` (the bucket's prefix); a synced folder holds `AWSLogs/...`."""
    key = signing_key(SEED)
    keys = _keys(signed_trail)
    content = b'{"Records":[]}'
    stored_log = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/05/02/111122223333_CloudTrail_us-east-1_20240502T0805Z_abcdefghijklmnop.json.gz"  # noqa: E501

    def digest(hour: int, previous: ReadDigest | None, logs: list[dict[str, str]]) -> ReadDigest:
        name = f"AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/05/02/x_CloudTrail-Digest_us-east-1_t_us-east-1_20240502T{hour:02d}5959Z.json.gz"  # noqa: E501
        fields = json.loads(AWS_DIGEST_EXAMPLE) | {
            "digestStartTime": f"2024-05-02T{hour:02d}:00:00Z", "digestEndTime": f"2024-05-02T{hour:02d}:59:59Z",
            "digestS3Object": f"cloudtrail/{name}", "digestPublicKeyFingerprint": fingerprint(key), "logFiles": logs,
            "previousDigestS3Object": f"cloudtrail/{previous.key}" if previous else None,
            "previousDigestHashValue": previous.sha256 if previous else None,
            "previousDigestSignature": previous.signature if previous else None}  # fmt: skip
        body = digest_body(fields)
        parsed = parse_digest(body)
        return ReadDigest(name, sha256_hex(body), parsed, None, sign(key, parsed, sha256_hex(body)), "SHA256withRSA")

    listed = [{"s3Bucket": "b", "s3Object": f"cloudtrail/{stored_log}", "hashValue": sha256_hex(content)}]
    eight = digest(8, None, listed)
    nine = digest(9, eight, [])
    older = ReadDigest(eight.key, eight.sha256, eight.digest)  # a folder: only the newest has its signature
    logs = {stored_log: hash_stored(gzip.compress(content))}
    rows = judge_trail(TrailInput("111122223333", "us-east-1", [older, nine], logs), keys)
    assert [(row.kind, row.status) for row in rows] == [("digest", "valid"), ("digest", "valid"), ("log", "valid")]
