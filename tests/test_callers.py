"""One definition of the caller: the `caller_arn` / `actor` SQL macros, their Python twin, and the one short name
`keytrail detect`, `keytrail alerts list` and SNS Subjects print."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from pipeline import callers, events
from pipeline.cli import app
from pipeline.engine import Engine
from pipeline.ingest import ingest
from tests.conftest import FIXTURES
from tests.trails import log_bytes, log_key, write_local

ACCOUNT = "111122223333"
WORKLOAD_ROLE = f"arn:aws:iam::{ACCOUNT}:role/etl-worker"
WORKLOAD_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/etl-worker/i-0a1b2c3d4e5f67890"
SSO_ROLE_NAME = "AWSReservedSSO_Admin_0123456789abcdef"
SSO_ROLE = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/{SSO_ROLE_NAME}"
SSO_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/{SSO_ROLE_NAME}/mallory@example.com"
USER = f"arn:aws:iam::{ACCOUNT}:user/alice"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# (principal_arn, session_issuer_arn, invoked_by, principal_account_id) -> (caller_arn, actor)
IDENTITIES = [
    ((WORKLOAD_SESSION, WORKLOAD_ROLE, None, ACCOUNT), (WORKLOAD_ROLE, WORKLOAD_ROLE)),
    ((SSO_SESSION, SSO_ROLE, None, ACCOUNT), (SSO_SESSION, SSO_SESSION)),
    ((USER, None, None, ACCOUNT), (USER, USER)),
    ((None, None, "secretsmanager.amazonaws.com", ACCOUNT), (None, "secretsmanager.amazonaws.com")),
    ((None, None, None, "444455556666"), (None, "444455556666")),  # an AWSAccount caller: no ARN at all
    ((None, SSO_ROLE, None, ACCOUNT), (None, ACCOUNT)),
    ((None, None, None, None), (None, None)),
]


@pytest.fixture(scope="module")
def engine() -> Engine:
    with Engine.from_table(events.EVENTS_SCHEMA.empty_table()) as session:
        yield session


@pytest.mark.parametrize(("identity", "expected"), IDENTITIES)
def test_the_macros_and_the_python_twin_agree(
    engine: Engine, identity: tuple[str | None, ...], expected: tuple[str | None, str | None]
) -> None:
    principal, issuer, invoked_by, account = identity
    row = engine.sql(
        "SELECT caller_arn($p::VARCHAR, $s::VARCHAR) AS caller, "
        "actor($p::VARCHAR, $s::VARCHAR, $i::VARCHAR, $a::VARCHAR) AS actor",
        {"p": principal, "s": issuer, "i": invoked_by, "a": account},
    ).to_pylist()[0]
    assert (row["caller"], row["actor"]) == expected
    assert callers.caller_arn(principal, issuer) == expected[0]


@pytest.mark.parametrize(
    ("arn", "name"),
    [
        (WORKLOAD_SESSION, "etl-worker"),  # a workload role: the role, not the per-run session
        (WORKLOAD_ROLE, "etl-worker"),
        (SSO_SESSION, "mallory@example.com"),  # Identity Center: the person, not the shared permission set
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/ops-admin/alice@example.com", "ops-admin"),
        (USER, "alice"),
        (f"arn:aws:iam::{ACCOUNT}:root", f"root@{ACCOUNT}"),
        (KEY, "key/1234abcd"),
        (f"arn:aws:kms:us-east-1:{ACCOUNT}:key/mrk-1234abcd12ab34cd56ef1234567890ab", "key/mrk-1234"),
        (f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/etl-key", "etl-key"),
        (f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:prod/db-password-AbC123", "prod/db-password"),
        ("kms.amazonaws.com", "kms.amazonaws.com"),
        ("", None),
        (None, None),
    ],
)
def test_display_name(arn: str | None, name: str | None) -> None:
    assert callers.display_name(arn) == name


def test_the_display_name_of_a_session_is_the_name_of_its_caller() -> None:
    for (principal, *_), (caller, _) in IDENTITIES:
        if principal and caller:
            assert callers.display_name(principal) == callers.display_name(caller)


def _deletion_by(arn: str, role_arn: str) -> dict[str, Any]:
    record = json.loads((FIXTURES / "events" / "kms_schedule_key_deletion.json").read_text())
    record["userIdentity"] = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLEOPSADMIN:alice@example.com",
        "arn": arn,
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role_arn, "userName": "ops-admin"}},
    }
    return record


def test_detect_and_alerts_list_print_the_same_name(lake: Path, aws: str, tmp_path: Path) -> None:
    """A key deletion reports the session as recorded; both tables name it by its caller's role."""
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/ops-admin/alice@example.com"
    trail = tmp_path / "trail"
    deletion = _deletion_by(session, f"arn:aws:iam::{ACCOUNT}:role/ops-admin")
    write_local(trail, log_key(dt.date(2024, 5, 1), "20240501T1020Z_a", account=ACCOUNT), log_bytes([deletion]))
    ingest(str(trail), lake)
    topic = boto3.client("sns", endpoint_url=aws).create_topic(Name="keytrail-callers")["TopicArn"]
    runner = CliRunner()
    window = ["--since", "2024-05-01T10:00:00Z", "--until", "2024-05-01T11:00:00Z"]
    publish = ["-d", "kms_key_deletion_or_disable", "--publish", "--topic-arn", topic, "--endpoint-url", aws]
    detected = runner.invoke(app, ["detect", "--lake", str(lake), *window, *publish], env={"COLUMNS": "200"})
    assert detected.exit_code == 0, detected.output
    listed = runner.invoke(app, ["alerts", "list", "--lake", str(lake)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "ops-admin -> key/1234abcd" in detected.stdout
    assert " ops-admin " in listed.stdout
    assert "alice@example.com" not in detected.stdout + listed.stdout
