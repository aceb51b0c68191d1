"""The names table: aliases from the trail over time, `names refresh` against moto's KMS and Organizations,
a CSV, and names beside ids in alerts and Subjects (never in alert ids)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import aws, catalog, findings
from pipeline.alerting.messages import subject
from pipeline.cli import app
from pipeline.names import csv_file, resolve, table
from pipeline.tuning.model import EMPTY
from tests import tuning_lake as tl
from tests.test_alerts import make_alert

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
runner = CliRunner()


@pytest.fixture(scope="module")
def named_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tl.build(tmp_path_factory.mktemp("names") / "lake")


def _find(lake: Path, *, names: bool = True) -> list:
    return findings.find(
        lake,
        tl.SINCE,
        tl.UNTIL,
        detections=catalog.load("detections"),
        tuning=EMPTY,
        now=NOW,
        detection_ids=["kms_key_deletion_or_disable"],
        names=names,
    )


def test_aliases_created_moved_and_deleted_resolve_as_of_each_alerts_time(named_lake: Path) -> None:
    alerts = _find(named_lake)
    named = {(a.first_seen.strftime("%H:%M"), a.resource_arn): a.names.get("resource") for a in alerts}
    assert named == {
        ("14:10", tl.KEY_A): "alias/payments-prod",  # created on 05-07
        ("14:15", tl.KEY_B): "alias/payments-prod",  # moved to KEY_B at 14:12
        ("14:25", tl.KEY_A): "alias/orders",  # KEY_A lost payments-prod, got orders at 14:16
        ("14:30", tl.KEY_S): None,  # never named
        ("14:50", tl.KEY_B): None,  # payments-prod deleted at 14:40
    }
    # Names are enrichment: the same findings without them have the same ids.
    assert [a.alert_id for a in _find(named_lake, names=False)] == [a.alert_id for a in alerts]
    rows = [r for r in table.read(named_lake) if r.kind == "key"]
    assert {(r.id, r.name, r.valid_until is None) for r in rows} == {
        (tl.KEY_A, "alias/payments-prod", False),
        (tl.KEY_B, "alias/payments-prod", False),
        (tl.KEY_A, "alias/orders", True),
    }


def test_an_alerts_subject_shows_the_alias_and_lists_show_it_beside_the_id(named_lake: Path) -> None:
    alice = next(a for a in _find(named_lake) if a.first_seen.minute == 15)
    assert subject(alice) == "[CRITICAL] KMS key scheduled for deletion or disabled: alice on alias/payments-prod"
    assert resolve.resource_label(alice) == "alias/payments-prod (key/0987dcba…)"
    assert resolve.labelled("payments-prod", "210987654321") == "payments-prod (210987654321)"
    assert resolve.labelled(None, tl.KEY_A) == "key/1234abcd…"


def test_names_refresh_against_moto_fills_aliases_and_account_names(named_lake: Path, aws: str, tmp_path: Path) -> None:
    orgs = aws_client("organizations", aws)
    orgs.create_organization(FeatureSet="ALL")
    created = orgs.create_account(Email="pay@example.com", AccountName="payments-prod")["CreateAccountStatus"]
    keys = {}
    for region in ("us-east-1", "eu-west-1"):
        kms = aws_client("kms", aws, region)
        keys[region] = kms.create_key(Description="payments")["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName=f"alias/payments-{region}", TargetKeyId=keys[region].split("/")[-1])
    lake = tmp_path / "lake"
    lake.mkdir()
    regions = ["--region", "us-east-1", "--region", "eu-west-1"]
    result = runner.invoke(app, ["names", "refresh", "--lake", str(lake), "--aws", "--endpoint-url", aws, *regions])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["names", "list", "--lake", str(lake), "--format", "json"])
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["kind"], r["id"], r["name"]) for r in rows if r["kind"] == "key"} >= {
        ("key", keys["us-east-1"], "alias/payments-us-east-1"),
        ("key", keys["eu-west-1"], "alias/payments-eu-west-1"),
    }
    accounts = {r["id"]: r["name"] for r in rows if r["kind"] == "account"}
    assert accounts[created["AccountId"]] == "payments-prod" and all(r["source"] == "aws" for r in rows)
    # an alert on that key, at any time (a snapshot has no history), is named by it
    index = resolve.NameIndex(table.read(lake))
    alert = make_alert(resource_arn=keys["eu-west-1"], account_id=created["AccountId"])
    named = resolve.enrich([alert], index)[0]
    assert named.names == {"resource": "alias/payments-eu-west-1", "account": "payments-prod"}
    assert subject(named).endswith("on alias/payments-eu-west-1") and named.alert_id == alert.alert_id


def aws_client(service: str, endpoint: str, region: str = "us-east-1") -> object:
    return aws.client(service, endpoint_url=endpoint, region=region)


def test_a_names_csv_loads_and_the_trail_wins_where_it_knows_the_time(named_lake: Path, tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    path.write_text(f"kind,id,name\naccount,{tl.ACCOUNT},payments-prod\nkey,{tl.KEY_S},alias/sandbox-key\n")
    result = runner.invoke(app, ["names", "load", str(path), "--lake", str(named_lake)])
    assert result.exit_code == 0, result.output
    alerts = {a.first_seen.strftime("%H:%M"): a for a in _find(named_lake)}
    assert alerts["14:30"].names == {"resource": "alias/sandbox-key"}  # only the CSV knows KEY_S
    assert alerts["14:10"].names == {"resource": "alias/payments-prod", "account": "payments-prod"}
    with pytest.raises(ValueError, match=r"names.csv:3: kind 'user' is not one of key, account, secret"):
        csv_file.parse("kind,id,name\naccount,111122223333,a\nuser,x,y\n", where="names.csv")
    with pytest.raises(ValueError, match=r"x.csv:2: account id '1111' is not 12 digits"):
        csv_file.parse("kind,id,name\naccount,1111,a\n", where="x.csv")


def test_investigations_show_names_beside_ids_as_of_each_row(named_lake: Path) -> None:
    from pipeline import investigate

    _find(named_lake)  # a detection run brings the names table up to date from the trail
    for who, expected in (("alice", ["alias/payments-prod", None]), ("carol", ["alias/orders"])):
        table = investigate.investigate(
            named_lake,
            "principal_activity",
            {"principal": f"arn:aws:iam::{tl.ACCOUNT}:user/{who}", "since": "2024-05-08", "until": "2024-05-09"},
            now=NOW,
        )
        columns = table.column_names
        assert columns[columns.index("resource") + 1] == "resource_name"
        rows = sorted(table.to_pylist(), key=lambda r: r["first_seen"])
        assert [r["resource_name"] for r in rows] == expected  # alice's key lost its alias at 14:40
