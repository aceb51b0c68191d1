"""`keytrail names refresh|load|list`: the lake's names table (key aliases, account names, secret names), which
alerts, SNS Subjects, the report and `alerts list` print beside ids. pipeline/names does the work."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Table

from pipeline import aws, safe_text
from pipeline.cli.common import fail, make_console
from pipeline.names import aws_refresh, csv_file, table, trail
from pipeline.settings import Settings
from pipeline.times import display

app = typer.Typer(help="The names table: key aliases, account names and secret names shown beside ids.")

LakeOption = Annotated[Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")]


def _lake(lake: Path | None, settings: Settings) -> Path:
    path = lake if lake is not None else settings.lake
    if not path.is_dir():
        raise fail(make_console(stderr=True), f"lake {path} not found: ingest a trail first or pass --lake")
    return path


@app.command("refresh")
def refresh_command(
    lake: LakeOption = None,
    from_aws: Annotated[
        bool, typer.Option("--aws", help="Also ask AWS: KMS ListAliases per account/region, Organizations.")
    ] = False,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="A region to list aliases in (repeatable).")
    ] = None,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="An account to list aliases in (repeatable).")
    ] = None,
    role_name: Annotated[
        str | None,
        typer.Option("--role-name", help="A role to assume in each account (default: this account only)."),
    ] = None,
    organizations: Annotated[
        bool, typer.Option("--organizations/--no-organizations", help="Account names from Organizations.")
    ] = True,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="AWS endpoint, e.g. a moto server (KEYTRAIL_ENDPOINT_URL).")
    ] = None,
) -> None:
    """Rebuild the names the trail records (CreateAlias/UpdateAlias/DeleteAlias, CreateSecret) and, with --aws,
    fetch the current aliases and account names from AWS with the standard credential chain.

    Without --account, aliases are listed in the caller's own account; with --role-name, in every account of
    the organization (or each --account) through that role. Regions: each --region, else KEYTRAIL_REGION.

    Example: keytrail names refresh --lake ./lake --aws --region us-east-1 --region eu-west-1
    """
    settings = Settings.from_env()
    console, err = make_console(), make_console(stderr=True)
    path = _lake(lake, settings)
    console.print(f"names from the trail: {trail.sync_from_trail(path)} row(s)")
    if not from_aws:
        return
    endpoint = endpoint_url or settings.endpoint_url
    regions = tuple(region or (settings.region,))
    try:
        org = aws.client("organizations", endpoint_url=endpoint, region=settings.region) if organizations else None
        accounts = list(account or ())
        if not accounts and role_name and org is not None:
            accounts = [row.id for row in aws_refresh.account_rows(org)]
        if not accounts:
            sts = aws.client("sts", endpoint_url=endpoint, region=settings.region)
            accounts = [sts.get_caller_identity()["Account"]]
        rows, warnings = aws_refresh.refresh_rows(_kms_clients(endpoint, role_name), accounts, regions, org)
    except (ClientError, BotoCoreError) as exc:
        raise fail(err, f"AWS refused the names refresh ({exc}): check the credentials and permissions") from None
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {safe_text.markup(warning)}")
    written = table.replace_source(path, "aws", rows)
    kinds = {kind: sum(1 for r in rows if r.kind == kind) for kind in ("key", "account")}
    console.print(
        f"names from AWS: {written} row(s) ({kinds['key']} alias(es) in {len(accounts)} account(s) x "
        f"{len(regions)} region(s), {kinds['account']} account name(s))"
    )


def _kms_clients(endpoint: str | None, role_name: str | None) -> aws_refresh.KmsClients:
    sessions: dict[str, Any] = {}

    def kms_for(account_id: str, region: str) -> Any:
        if role_name is None:
            return aws.client("kms", endpoint_url=endpoint, region=region)
        if account_id not in sessions:
            sts = aws.client("sts", endpoint_url=endpoint, region=region)
            role = f"arn:aws:iam::{account_id}:role/{role_name}"
            sessions[account_id] = sts.assume_role(RoleArn=role, RoleSessionName="keytrail-names")["Credentials"]
        return aws.client("kms", endpoint_url=endpoint, region=region, credentials=sessions[account_id])

    return kms_for


@app.command("load")
def load_command(
    csv_path: Annotated[Path, typer.Argument(help="A CSV with columns kind,id,name[,valid_from,valid_until].")],
    lake: LakeOption = None,
) -> None:
    """Load names from a CSV you keep (kind: key, account or secret); it replaces the previously loaded CSV.

    Example: keytrail names load accounts.csv --lake ./lake
    """
    settings = Settings.from_env()
    err = make_console(stderr=True)
    path = _lake(lake, settings)
    try:
        rows = csv_file.parse(csv_path.read_text(encoding="utf-8"), where=str(csv_path))
    except (OSError, ValueError) as exc:
        raise fail(err, str(exc)) from None
    make_console().print(f"names from {safe_text.markup(csv_path)}: {table.replace_source(path, 'csv', rows)} row(s)")


@app.command("list")
def list_command(
    lake: LakeOption = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only key, account or secret names.")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json (one row per line).")] = "table",
) -> None:
    """List the names table: what each id is called, from when until when, and where that came from.

    Example: keytrail names list --lake ./lake --kind key
    """
    settings = Settings.from_env()
    console = make_console()
    path = _lake(lake, settings)
    rows = [row for row in table.read(path) if kind is None or row.kind == kind]
    if output == "json":
        for row in rows:
            record = {**row.__dict__, "valid_from": _when(row.valid_from), "valid_until": _when(row.valid_until)}
            typer.echo(safe_text.json_text(json.dumps(record)))
        return
    shown = Table(title=f"names in {safe_text.markup(path)}")
    for column in ("kind", "id", "name", "from", "until", "source"):
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(
            row.kind,
            safe_text.terminal(row.id),
            safe_text.terminal(row.name),
            _when(row.valid_from) or "-",
            _when(row.valid_until) or "-",
            row.source,
        )
    console.print(shown)


def _when(moment: dt.datetime | None) -> str | None:
    return display(moment) if moment else None


def register(root: typer.Typer) -> None:
    """Add the `names` group to the app."""
    root.add_typer(app, name="names")
