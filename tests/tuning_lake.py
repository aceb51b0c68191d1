"""A small real-shaped lake for the tuning and names tests (2024-05-08, account 111122223333 and a sandbox):

10:00 (05-07) CreateAlias alias/payments-prod -> KEY_A
14:10 ScheduleKeyDeletion of KEY_A by the nightly-rotate role          kms_key_deletion_or_disable
14:12 UpdateAlias alias/payments-prod -> KEY_B (the alias moves)
14:15 ScheduleKeyDeletion of KEY_B by alice                             kms_key_deletion_or_disable
14:16 CreateAlias alias/orders -> KEY_A
14:20 DeleteSecret (forced) by the nightly-rotate role                  secrets_deletion
14:25 DisableKey of KEY_A by carol                                      kms_key_deletion_or_disable
14:30 DisableKey of KEY_S by bob in the sandbox account 210987654321    kms_key_deletion_or_disable
14:40 DeleteAlias alias/payments-prod
14:50 DisableKey of KEY_B by alice                                      kms_key_deletion_or_disable
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pipeline import cases, catalog, events
from pipeline.catalog import EventSpec
from tests.trails import commit_table

UTC = dt.UTC
ACCOUNT, SANDBOX = "111122223333", "210987654321"
KEY_A = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_B = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
KEY_S = f"arn:aws:kms:us-east-1:{SANDBOX}:key/5555eeee-55ee-55ee-55ee-5555eeee5555"
NIGHTLY_ROLE = f"arn:aws:iam::{ACCOUNT}:role/nightly-rotate"
SINCE, UNTIL = dt.datetime(2024, 5, 8, 14, tzinfo=UTC), dt.datetime(2024, 5, 8, 15, tzinfo=UTC)
DETECTIONS = ("kms_key_deletion_or_disable", "secrets_deletion")


def user(name: str, account: str = ACCOUNT) -> catalog.Replace:
    return catalog.Replace(
        {
            "type": "IAMUser",
            "principalId": f"AIDAEXAMPLE{name.upper()}",
            "arn": f"arn:aws:iam::{account}:user/{name}",
            "accountId": account,
            "accessKeyId": f"AKIAEXAMPLE{name.upper()}",
            "userName": name,
        }
    )


NIGHTLY = catalog.Replace(
    {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLENIGHTLY:rotate-2024-05-08",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/nightly-rotate/rotate-2024-05-08",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLENIGHTLY",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLENIGHTLY",
                "arn": NIGHTLY_ROLE,
                "accountId": ACCOUNT,
                "userName": "nightly-rotate",
            },
            "attributes": {"creationDate": "2024-05-08T14:00:00Z", "mfaAuthenticated": "false"},
        },
    }
)


def _key_call(name: str, at: dt.datetime, who: catalog.Replace, key: str, **extra: Any) -> EventSpec:
    account = key.split(":")[4]
    overrides: dict[str, Any] = {
        "eventName": name,
        "userIdentity": who,
        "recipientAccountId": account,
        "requestParameters": catalog.Replace({"keyId": key, **extra}),
        "responseElements": None,
        "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key}],
    }
    return EventSpec(base="kms_schedule_key_deletion", at=at, overrides=overrides)


def _alias_call(name: str, at: dt.datetime, alias: str, key: str | None) -> EventSpec:
    params = {"aliasName": alias, **({"targetKeyId": key.split(":key/")[1]} if key else {})}
    overrides: dict[str, Any] = {
        "eventName": name,
        "userIdentity": user("admin"),
        "requestParameters": catalog.Replace(params),
        "responseElements": None,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": key or KEY_A}],
    }
    return EventSpec(base="kms_schedule_key_deletion", at=at, overrides=overrides)


def at(hour: int, minute: int, day: int = 8) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, minute, tzinfo=UTC)


def build(path: Path) -> Path:
    specs = [
        _alias_call("CreateAlias", at(10, 0, day=7), "alias/payments-prod", KEY_A),
        _key_call("ScheduleKeyDeletion", at(14, 10), NIGHTLY, KEY_A, pendingWindowInDays=7),
        _alias_call("UpdateAlias", at(14, 12), "alias/payments-prod", KEY_B),
        _key_call("ScheduleKeyDeletion", at(14, 15), user("alice"), KEY_B, pendingWindowInDays=7),
        _alias_call("CreateAlias", at(14, 16), "alias/orders", KEY_A),
        EventSpec(
            base="secrets_delete_secret",
            at=at(14, 20),
            overrides={"userIdentity": NIGHTLY, "recipientAccountId": ACCOUNT},
        ),
        _key_call("DisableKey", at(14, 25), user("carol"), KEY_A),
        _key_call("DisableKey", at(14, 30), user("bob", SANDBOX), KEY_S),
        _alias_call("DeleteAlias", at(14, 40), "alias/payments-prod", None),
        _key_call("DisableKey", at(14, 50), user("alice"), KEY_B),
    ]
    records = cases.expand_events(specs, key="tuning-lake", default_start=at(0, 0, day=7))
    commit_table(path, events.normalize_many(records, source_object="tuning-lake"))
    return path
