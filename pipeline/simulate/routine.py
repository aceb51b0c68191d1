"""Routine activity that resembles the evasive incidents of `attacks` and must stay quiet (detections v2):

a weekly batch (a big decrypt hour once a week, at the same hour), a partner outside the organization using the
shared key every day (seen in the key owner's trail as an AWSAccount caller, without an ARN), a new service
ramping up over three days, terraform replicating a secret to a region the organization already works in,
grants AWS services create for themselves, and the daily AWS Config / IAM Access Analyzer scans of every key and
secret (service-linked roles, invokedBy the service).
"""

from __future__ import annotations

from pipeline.simulate import shapes
from pipeline.simulate.attacks import replicate_secret
from pipeline.simulate.calls import Chunk, api_call, clamp, kms_crypto, service_call
from pipeline.simulate.identities import DATASETS, PROD_SECRETS, World, partner_account, stable_uuid
from pipeline.simulate.results import BenignActor
from pipeline.simulate.schedule import BUSINESS, Budget, Plan, burst, context, diurnal
from pipeline.simulate.shapes import KMS, SM

WEEKLY_START = 4 * 3600 + 10 * 60  # the weekly reconciliation runs at 04:10 UTC, on the focus day's weekday
WEEKLY_SECONDS = 30 * 60
PARTNER_START = 11 * 3600 + 30 * 60  # the partner's daily export
RAMP = (0.25, 0.6, 1.0)  # the new service's share of its full volume on its first three days (the last: focus day)
REPLICA_SECOND = 15 * 3600 + 40 * 60  # terraform's apply on the focus day
SCAN_SECOND = 1 * 3600 + 20 * 60  # Config and Access Analyzer sweep the account at night
REPLICATED_SECRET = "prod/cache/redis-auth"
SCANNED_KEYS = ("tenant-data-key", "ledger-key", "etl-key", "analytics-key", "secrets-key", "ebs-key", "s3-data-key")
RDS_GRANTEE = "rds.{region}.amazonaws.com"


def weekly_batch(c: Chunk, plan: Plan, budget: Budget) -> None:
    """Once a week (on the focus day's weekday) a reconciliation job decrypts a big volume in half an hour."""
    if (plan.focus_day - c.day_index) % 7:
        return
    p, key = c.world.principal("weekly-reconcile"), c.world.key(c.account, c.region, "reconcile-key")
    count = round(max(300, 0.05 * plan.events_per_day) * (0.97 + 0.06 * c.rng.random()))
    ctx = context(("job", "weekly-reconcile"))
    for second in burst(c.rng, count, WEEKLY_START + c.rng.randrange(180), WEEKLY_SECONDS):
        kms_crypto(c, second, p, key, "Decrypt", ctx)


def _partner_identity(world: World, session: str) -> str:
    """How the key owner's trail records another account's caller: AWSAccount, its account id, no ARN."""
    principal = "AROA" + stable_uuid(world.seed, "partner-role").replace("-", "").upper()[:17]
    return f'{{"type":"AWSAccount","principalId":"{principal}:{session}","accountId":"{partner_account(world.seed)}"}}'


def partner_daily(c: Chunk, plan: Plan) -> None:
    """A partner outside the organization decrypts prod's shared key every day (its nightly export)."""
    world = c.world
    if c.account != world.account("prod") or c.region != world.regions[0]:
        return
    key = world.key(c.account, c.region, "shared-data-key")
    identity = _partner_identity(world, "partner-export")
    for second in sorted(burst(c.rng, 30 + c.rng.randrange(10), PARTNER_START, 1200)):
        params = shapes.crypto_params("Decrypt", key, context(("dataset", c.pick(DATASETS))))
        event_id = c.uid()
        c.add(second, shapes.record(
            "1.09", identity, c.at(second), KMS, "Decrypt", c.region, "203.0.113.180", UA_PARTNER, params, c.uid(),
            event_id, True, c.account, resources=shapes.key_resources(key), shared=c.uid(),
        ))  # fmt: skip


UA_PARTNER = "aws-sdk-go-v2/1.25.3 os/linux lang/go#1.21.8 md/GOOS#linux md/GOARCH#amd64 api/kms#1.29.2"


def new_service(c: Chunk, plan: Plan, budget: Budget) -> None:
    """A search indexer deployed two days before the focus day, ramping up to its full volume."""
    ramp_day = c.day_index - (plan.focus_day - len(RAMP) + 1)
    if not 0 <= ramp_day < len(RAMP):
        return
    p, key = c.world.principal("search-indexer"), c.world.key(c.account, c.region, "search-key")
    full = max(240, 0.04 * plan.events_per_day)
    ctx = context(("index", "products"))
    for second in diurnal(c.rng, full * RAMP[ramp_day], BUSINESS):
        kms_crypto(c, second, p, key, "Decrypt" if c.rng.random() < 0.7 else "GenerateDataKey", ctx)


def terraform_replica(c: Chunk, plan: Plan) -> None:
    """Terraform adds a replica of a secret in the organization's second region (where its services run)."""
    world = c.world
    if c.day_index != plan.focus_day or len(world.regions) < 2:
        return
    secret = world.secret(c.account, c.region, REPLICATED_SECRET)
    replica_key = world.key(c.account, world.regions[1], "secrets-key")
    replicate_secret(c, REPLICA_SECOND + c.rng.randrange(300), world.principal("terraform"), secret,
                     world.regions[1], replica_key.arn)  # fmt: skip


def service_grants(c: Chunk) -> None:
    """RDS creating grants for itself on the database key when instances start (an AWS service's own call)."""
    key = c.world.key(c.account, c.region, "ebs-key")
    grantee = RDS_GRANTEE.format(region=c.region)
    for second in diurnal(c.rng, 3, BUSINESS):
        params = shapes.json_text({
            "keyId": key.arn, "granteePrincipal": grantee, "retiringPrincipal": grantee,
            "operations": ["Decrypt", "Encrypt", "GenerateDataKey", "ReEncryptFrom", "ReEncryptTo", "DescribeKey"],
        })  # fmt: skip
        response = shapes.json_text({"grantId": f"{c.rng.getrandbits(256):064x}", "keyId": key.arn})
        service_call(c, second, "rds.amazonaws.com", KMS, "CreateGrant", params, response=response,
                     resources=shapes.key_resources(key), read_only=False)  # fmt: skip


def compliance_scans(c: Chunk) -> None:
    """AWS Config and IAM Access Analyzer read every key's policy and every secret's metadata each night."""
    world = c.world
    second = SCAN_SECOND + c.rng.randrange(600)
    for label, key_calls, secret_calls in (
        ("config", ("DescribeKey", "GetKeyPolicy", "GetKeyRotationStatus", "ListResourceTags"), ("DescribeSecret",)),
        ("access-analyzer", ("GetKeyPolicy", "ListGrants"), ("GetResourcePolicy",)),
    ):
        p = world.principal(label)
        via = p.user_agent
        api_call(c, second, p, SM, "ListSecrets", '{"maxResults":100}', read_only=True, via=via)
        for alias in SCANNED_KEYS:
            key = world.key(c.account, c.region, alias)
            for name in key_calls:
                second = clamp(second + c.rng.randrange(1, 3))
                extra = ',"policyName":"default"' if name == "GetKeyPolicy" else ""
                api_call(c, second, p, KMS, name, f'{{"keyId":"{key.arn}"{extra}}}', read_only=True, via=via,
                         resources=shapes.key_resources(key))  # fmt: skip
        for name in PROD_SECRETS[:20]:
            secret = world.secret(c.account, c.region, name)
            for call in secret_calls:
                second = clamp(second + c.rng.randrange(1, 3))
                api_call(c, second, p, SM, call, f'{{"secretId":"{secret.arn}"}}', read_only=True, via=via)


def generate(c: Chunk, plan: Plan, budget: Budget) -> None:
    """The routine look-alikes of one chunk (prod's home region; the partner's calls are recorded there too)."""
    world = c.world
    partner_daily(c, plan)
    if c.account != world.account("prod") or c.region != world.regions[0]:
        return
    weekly_batch(c, plan, budget)
    new_service(c, plan, budget)
    terraform_replica(c, plan)
    service_grants(c)
    compliance_scans(c)


def routine_actors(world: World, plan: Plan) -> list[BenignActor]:
    """The routine look-alikes, with the detections they resemble."""
    prod, region = world.account("prod") or world.account_ids[0], world.regions[0]

    def actor(name: str, label: str, resource: str | None, description: str, *quiet_for: str) -> BenignActor:
        p = world.principal(label)
        return BenignActor(name, p.arn, resource, p.account, description, quiet_for, p.role_arn)

    key = world.key
    actors = [
        actor("weekly_batch", "weekly-reconcile", key(prod, region, "reconcile-key").arn,
              "a big Decrypt half-hour at 04:10 on the same weekday every week", "kms_decrypt_volume_spike"),
        BenignActor("partner_daily", partner_account(world.seed), key(prod, region, "shared-data-key").arn,
                    partner_account(world.seed), "a partner outside the organization (AWSAccount caller) decrypting "
                    "with the shared key every day", ("kms_cross_account_use",)),
        actor("new_service", "search-indexer", key(prod, region, "search-key").arn,
              f"a service deployed {len(RAMP) - 1} days ago ramping up ({', '.join(map(str, RAMP))} of its volume)",
              "kms_decrypt_volume_spike"),
        actor("compliance_scans", "config", None, "AWS Config reading every key policy and secret each night",
              "kms_key_policy_exposure", "secrets_enumeration"),
        actor("compliance_scans", "access-analyzer", None, "IAM Access Analyzer reading every key and secret policy",
              "kms_key_policy_exposure", "secrets_enumeration"),
        BenignActor("service_grants", None, key(prod, region, "ebs-key").arn, prod,
                    "RDS creating grants for itself on the database key", ("kms_key_policy_exposure",)),
    ]  # fmt: skip
    if len(world.regions) > 1:
        actors.append(actor("terraform_replica", "terraform", world.secret(prod, region, REPLICATED_SECRET).arn,
                            f"terraform replicating a secret to {world.regions[1]}, where the organization works",
                            "secrets_replication_exfil", "kms_external_key_use"))  # fmt: skip
    return actors
