"""Names from AWS itself (`keytrail names refresh --aws`): KMS ListAliases per account and region, and
Organizations ListAccounts. Clients are passed in (pipeline/aws.py makes them with the standard credential
chain); reading other accounts' aliases takes a role the caller may assume in each (`role_name`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.names.table import NameRow

log = logging.getLogger(__name__)

# (account id, region) -> a KMS client for that account and region
KmsClients = Callable[[str, str], Any]


def account_rows(organizations: Any) -> list[NameRow]:
    """Every account of the organization with its name (Organizations ListAccounts, paginated)."""
    rows: list[NameRow] = []
    for page in organizations.get_paginator("list_accounts").paginate():
        rows.extend(NameRow("account", account["Id"], account["Name"], "aws") for account in page["Accounts"])
    return rows


def alias_rows(kms: Any, account: str, region: str) -> list[NameRow]:
    """The aliases of one account and region that point at a key (AWS-managed `alias/aws/...` included)."""
    rows: list[NameRow] = []
    for page in kms.get_paginator("list_aliases").paginate():
        for alias in page["Aliases"]:
            key_id = alias.get("TargetKeyId")
            if not key_id:
                continue  # an alias not pointing at a key names nothing
            partition = alias["AliasArn"].split(":")[1] if alias.get("AliasArn") else "aws"
            rows.append(
                NameRow("key", f"arn:{partition}:kms:{region}:{account}:key/{key_id}", alias["AliasName"], "aws")
            )
    return rows


def refresh_rows(
    kms_clients: KmsClients, accounts: Iterable[str], regions: Iterable[str], organizations: Any | None = None
) -> tuple[list[NameRow], list[str]]:
    """Account names (when `organizations` is given) and the aliases of each account and region. An account
    or region that refuses (no role, access denied) is skipped with a warning: returns (rows, warnings)."""
    rows: list[NameRow] = []
    warnings: list[str] = []
    if organizations is not None:
        try:
            rows.extend(account_rows(organizations))
        except (ClientError, BotoCoreError) as exc:  # say which and go on with the aliases
            warnings.append(f"Organizations ListAccounts failed ({exc}): account names not refreshed")
    for account in accounts:
        for region in regions:
            try:
                rows.extend(alias_rows(kms_clients(account, region), account, region))
            except (ClientError, BotoCoreError) as exc:
                warnings.append(f"KMS ListAliases in {account}/{region} failed ({exc}): skipped")
    for warning in warnings:
        log.warning("names refresh: %s", warning)
    return rows, warnings
