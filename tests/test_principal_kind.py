"""The `principal_kind` macro (queries/macros.sql): human / workload / service, from what the lake stores of a
record's userIdentity. The identities are the shapes real trails write (the real-data corpus, AWS docs)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline import events
from pipeline.engine import Engine
from tests.conftest import FIXTURES

ACCOUNT = "111122223333"
SSO_ROLE = "AWSReservedSSO_account-admin_599c9e90e350d2ff"
_ROLE = {"type": "Role", "accountId": ACCOUNT}


def _assumed(role: str, session: str, issuer_path: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLE",
        "sessionContext": {
            "attributes": {"creationDate": "2024-05-08T14:00:00Z", "mfaAuthenticated": "false"},
            "sessionIssuer": {**_ROLE, "arn": f"arn:aws:iam::{ACCOUNT}:role/{issuer_path}{role}", "userName": role},
        },
        **extra,
    }


CLI = "aws-cli/2.15.40 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22 prompt/off command/kms.decrypt"
SDK = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#5.10 md/arch#x86_64 lang/python#3.11 exec-env/AWS_ECS_FARGATE"
BROWSER = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:102.0) Gecko/20100101 Firefox/102.0"

# (what it is, userIdentity, userAgent) -> kind
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "an IAM user on the CLI",
        {
            "type": "IAMUser",
            "principalId": "AIDAEX",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
            "accountId": ACCOUNT,
            "accessKeyId": "AKIAEX",
            "userName": "alice",
        },
        CLI,
        "human",
    ),
    (
        "root",
        {"type": "Root", "principalId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:root", "accountId": ACCOUNT},
        BROWSER,
        "human",
    ),
    (
        "an Identity Center session",
        _assumed(SSO_ROLE, "mallory@example.com", "aws-reserved/sso.amazonaws.com/"),
        CLI,
        "human",
    ),
    ("an Identity Center role written without its path", _assumed(SSO_ROLE, "mallory"), CLI, "human"),
    ("an admin role used from the console", _assumed("ops-admin", "alice"), BROWSER, "human"),
    ("a SAML session named after the person", _assumed("ops-admin", "alice@example.com"), CLI, "human"),
    (
        "a federated user",
        {
            "type": "FederatedUser",
            "principalId": f"{ACCOUNT}:bob",
            "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/bob",
            "accountId": ACCOUNT,
        },
        CLI,
        "human",
    ),
    ("an ECS task role", _assumed("etl-worker", "3f2a9c1e0b7d4e5f"), SDK, "workload"),
    ("an EC2 instance profile", _assumed("web-server", "i-0a1b2c3d4e5f67890", ec2RoleDelivery="2.0"), SDK, "workload"),
    ("a Lambda function", _assumed("rotate-fn-role", "rotate-fn"), "aws-sdk-nodejs/2.1", "workload"),
    (
        "another account's caller seen only as an account",
        {"type": "AWSAccount", "principalId": "AROAEXAMPLEOUTSIDER:exfil", "accountId": "444455556666"},
        SDK,
        "workload",
    ),
    (
        "an AWS service",
        {"type": "AWSService", "invokedBy": "workmail.eu-west-1.amazonaws.com"},
        "workmail.eu-west-1.amazonaws.com",
        "service",
    ),
    (
        "Secrets Manager decrypting for a user's GetSecretValue",
        {
            "type": "IAMUser",
            "principalId": "AIDAEX",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
            "accountId": ACCOUNT,
            "userName": "alice",
            "invokedBy": "secretsmanager.amazonaws.com",
        },
        "secretsmanager.amazonaws.com",
        "service",
    ),
    (
        "an IAM user's call made internally by AWS",
        {
            "type": "IAMUser",
            "principalId": "AIDAEX",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/bert-jan",
            "accountId": ACCOUNT,
            "userName": "bert-jan",
            "invokedBy": "AWS Internal",
        },
        "AWS Internal",
        "service",
    ),
    (
        "an identity with no type (a scheduled key deletion)",
        {"accountId": ACCOUNT, "invokedBy": "AWS Internal"},
        "AWS Internal",
        "service",
    ),
    (
        "EC2 infrastructure decrypting an EBS volume",
        {
            "type": "AssumedRole",
            "principalId": f"{ACCOUNT}:aws:ec2-infrastructure:i-81e2f56c",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/i-81e2f56c",
            "accountId": ACCOUNT,
            "sessionContext": {
                "sessionIssuer": {**_ROLE, "arn": f"arn:aws:iam::{ACCOUNT}:role/aws:ec2-infrastructure"},
            },
        },
        "AWS Internal",
        "service",
    ),
    (
        "a service-linked role",
        _assumed("AWSServiceRoleForRDS", "SLRManagement", "aws-service-role/rds.amazonaws.com/"),
        "rds.amazonaws.com",
        "service",
    ),
]


def _record(identity: dict[str, Any], user_agent: str, index: int) -> dict[str, Any]:
    record = json.loads((FIXTURES / "events" / "kms_decrypt.json").read_text())
    record.update(userIdentity=identity, userAgent=user_agent, eventID=f"00000000-0000-4000-8000-{index:012d}")
    return record


@pytest.fixture(scope="module")
def kinds() -> dict[str, str]:
    table = events.normalize_many(_record(identity, agent, i) for i, (_, identity, agent, _) in enumerate(CASES))
    with Engine.from_table(table) as engine:
        rows = engine.sql(
            "SELECT event_id, principal_kind(principal_type, principal_arn, session_issuer_arn, invoked_by, "
            "user_agent) AS kind FROM events"
        ).to_pylist()
    by_id = {row["event_id"]: row["kind"] for row in rows}
    return {name: by_id[f"00000000-0000-4000-8000-{i:012d}"] for i, (name, *_) in enumerate(CASES)}


@pytest.mark.parametrize(("name", "expected"), [(name, kind) for name, _, _, kind in CASES])
def test_principal_kind(kinds: dict[str, str], name: str, expected: str) -> None:
    assert kinds[name] == expected


def test_every_real_event_gets_a_kind_and_the_stratus_user_is_human(realdata: Path) -> None:
    """Over the real trail: never null; the IAM user's own calls (Stratus, Terraform) are a person's, the calls AWS
    made for that user (invokedBy) are a service's."""
    batches = [
        events.rows_to_batch(
            events.rows_from_log(gzip.decompress(path.read_bytes()), str(path), events.DEFAULT_SOURCES).rows
        )
        for path in sorted((realdata / "corpus" / "invictus-aws-dataset").rglob("*.json.gz"))
    ]
    with Engine.from_table(pa.Table.from_batches(batches)) as engine:
        rows = engine.sql(
            "SELECT principal_name, invoked_by, principal_kind(principal_type, principal_arn, session_issuer_arn, "
            "invoked_by, user_agent) AS kind FROM events"
        ).to_pylist()
    assert rows and all(row["kind"] in {"human", "workload", "service"} for row in rows)
    own = {row["kind"] for row in rows if row["principal_name"] == "bert-jan" and row["invoked_by"] is None}
    for_the_user = {row["kind"] for row in rows if row["principal_name"] == "bert-jan" and row["invoked_by"]}
    assert (own, for_the_user) == ({"human"}, {"service"})
