"""The evasive incidents (detections v2): attackers who pace themselves, straddle a clock hour, replicate secrets
away, or bring their own key. Each builder writes one incident into its chunk, like `incidents`' builders, and is
registered there; the aligned one-hour buckets of a scheduled run see only part of the first three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pipeline.simulate import shapes
from pipeline.simulate.calls import Chunk, api_call, kms_crypto, secret_read
from pipeline.simulate.identities import LEDGER_IDS, ORDERS_TENANTS, PROD_SECRETS, Key, Principal, Secret, World
from pipeline.simulate.schedule import FLAT, Budget, context
from pipeline.simulate.shapes import KMS, SM

if TYPE_CHECKING:
    from pipeline.simulate.results import InjectedIncident

HOUR = 3600
UNUSED_REGION_CHOICES = ("ap-southeast-3", "me-central-1", "af-south-1", "sa-east-1")
EXFIL_IP = "185.220.101.47"  # the straddling burst's caller: an address the company never uses


class Trace(Protocol):
    """What a builder records into (incidents._Trace)."""

    def add(self, second: int, event_id: str) -> None: ...

    def done(self, principal: Principal | None, resource_arn: str | None) -> InjectedIncident: ...


def unused_region(world: World) -> str:
    """A region no account of the simulated organization works in."""
    return next(region for region in UNUSED_REGION_CHOICES if region not in world.regions)


def foreign_key(world: World, region: str) -> Key:
    """A key of the attacker's account (outside the organization)."""
    return world.key(world.external_account, region, "attacker-held-key")


def paced_exfiltration(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """ledger-service decrypts ~8x its usual level for four hours (19:00-23:00): never a burst in any one hour."""
    p, key = c.world.principal("ledger-service"), c.world.key(c.account, c.region, "ledger-key")
    usual = budget.per_day("ledger-service") * 0.6 / sum(FLAT)  # its Decrypts in an ordinary hour
    per_hour = max(40, round(8 * usual))
    first = 19 * HOUR
    for hour in range(4):
        for second in sorted(first + hour * HOUR + c.rng.randrange(HOUR) for _ in range(per_hour)):
            ctx = context(("service", "ledger"), ("ledger_id", c.pick(LEDGER_IDS)))
            t.add(second, kms_crypto(c, second, p, key, "Decrypt", ctx))
    return t.done(p, key.arn)


def paced_enumeration(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """data-lake-writer's stolen session reads all 40 production secrets, none of which it ever read, one every
    5-9 minutes from 02:00 (about 4.7 hours): never more than two in any 6 minutes, so no burst count is reached."""
    p, key = c.world.principal("data-lake-writer"), c.world.key(c.account, c.region, "secrets-key")
    second = 2 * HOUR
    for name in PROD_SECRETS:
        second += c.rng.randrange(300, 540)
        t.add(second, secret_read(c, second, p, c.world.secret(c.account, c.region, name), key))
    return t.done(p, None)


def paced_denial_probe(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """search-indexer's stolen session probes 36 production secrets it may not read, one every 6-9 minutes from
    08:00 (about 4.5 hours): every call denied, never more than two in any 10 minutes."""
    p, key = c.world.principal("search-indexer"), c.world.key(c.account, c.region, "secrets-key")
    second = 8 * HOUR
    for name in PROD_SECRETS[:36]:
        second += c.rng.randrange(360, 540)
        secret = c.world.secret(c.account, c.region, name)
        t.add(second, secret_read(c, second, p, secret, key, error="AccessDeniedException"))
    return t.done(p, None)


def straddling_burst(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """A person's IAM user on the CLI, from a new IP, on a key they never used: 1,500 plaintext-returning calls in
    20 minutes from 13:50, 598 before 14:00 and 902 after (neither hour reaches a 1,000-call floor)."""
    p, key = c.world.principal("erin"), c.world.key(c.account, c.region, "tenant-data-key")
    boundary = 14 * HOUR
    seconds = [boundary - 600 + c.rng.randrange(600) for _ in range(598)]
    seconds += [boundary + c.rng.randrange(600) for _ in range(902)]
    for second in sorted(seconds):
        op = "Decrypt" if c.rng.random() < 0.8 else "GenerateDataKey"
        ctx = context(("tenant_id", c.pick(ORDERS_TENANTS)), ("purpose", "orders"))
        t.add(second, kms_crypto(c, second, p, key, op, ctx, ip=EXFIL_IP))
    return t.done(p, key.arn)


def straddling_context_scan(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """billing-worker walks 40 tenants it never served over two hours from 21:00: 25 distinct in the first
    hour, 27 in the second (12 in both), each hour under a per-hour distinct-value threshold."""
    p, key = c.world.principal("billing-worker"), c.world.key(c.account, c.region, "tenant-data-key")
    tenants = [f"t-{5001 + i}" for i in range(40)]
    first, second_hour = tenants[:25], tenants[13:]
    calls = [(21 * HOUR + c.rng.randrange(HOUR), tenant) for tenant in first]
    calls += [(22 * HOUR + c.rng.randrange(HOUR), tenant) for tenant in second_hour]
    for second, tenant in sorted(calls):
        ctx = context(("tenant_id", tenant), ("purpose", "billing"))
        t.add(second, kms_crypto(c, second, p, key, "Decrypt", ctx))
    return t.done(p, key.arn)


def replicate_secret(c: Chunk, second: int, p: Principal, secret: Secret, region: str, kms_key: str | None) -> str:
    """ReplicateSecretToRegions of one secret to one region (as terraform or an attacker calls it)."""
    replica: dict[str, str] = {"region": region}
    if kms_key is not None:
        replica["kmsKeyId"] = kms_key
    params = shapes.json_text(
        {"secretId": secret.arn, "addReplicaRegions": [replica], "forceOverwriteReplicaSecret": False}
    )
    status = {"region": region, "kmsKeyId": kms_key or "alias/aws/secretsmanager", "status": "InProgress"}
    response = shapes.json_text({"aRN": secret.arn, "replicationStatus": [status]})
    return api_call(c, second, p, SM, "ReplicateSecretToRegions", params, read_only=False, response=response)


def secrets_replicated_away(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """peggy replicates four production secrets to a region the organization never used, then reads each replica
    there, from that region, minutes later."""
    p, region = c.world.principal("peggy"), unused_region(c.world)
    secrets = [c.world.secret(c.account, c.region, name) for name in PROD_SECRETS[12:16]]
    second = start
    for secret in secrets:
        second += c.rng.randrange(20, 60)
        t.add(second, replicate_secret(c, second, p, secret, region, None))
    second += 600
    replica_key = c.world.key(c.account, region, "aws/secretsmanager")
    for secret in secrets:
        replica = Secret(secret.name, secret.account, region, secret.suffix)
        for _ in range(2):
            second += c.rng.randrange(15, 90)
            t.add(second, _read_in(c, second, p, replica, replica_key, region))
    return t.done(p, secrets[0].arn)


def _read_in(c: Chunk, second: int, p: Principal, secret: Secret, key: Key, region: str) -> str:
    """GetSecretValue of a replica, recorded in the replica's region, and Secrets Manager's Decrypt there."""
    event_id = api_call(
        c, second, p, SM, "GetSecretValue", f'{{"secretId":"{secret.arn}"}}', read_only=True, region=region
    )
    params = shapes.crypto_params("Decrypt", key, shapes.secret_context(secret, "AWSCURRENT"))
    api_call(c, second, p, KMS, "Decrypt", params, read_only=True, via=SM, region=region,
             resources=shapes.key_resources(key))  # fmt: skip
    return event_id


def bring_your_own_key(c: Chunk, t: Trace, start: int, budget: Budget) -> InjectedIncident:
    """victor re-encrypts 60 order records to a key of the attacker's account, then points a database secret at
    that key (every later value is readable by its owner)."""
    p = c.world.principal("victor")
    source, target = c.world.key(c.account, c.region, "tenant-data-key"), foreign_key(c.world, c.region)
    second = start
    for _ in range(60):
        second += c.rng.randrange(2, 8)
        ctx = context(("tenant_id", c.pick(ORDERS_TENANTS)), ("purpose", "orders"))
        params = (
            f'{{"sourceEncryptionAlgorithm":"SYMMETRIC_DEFAULT","sourceEncryptionContext":{ctx},'
            f'"destinationKeyId":"{target.arn}","destinationEncryptionAlgorithm":"SYMMETRIC_DEFAULT",'
            f'"destinationEncryptionContext":{ctx}}}'
        )
        resources = (
            f'[{{"accountId":"{source.account}","type":"AWS::KMS::Key","ARN":"{source.arn}"}},'
            f'{{"accountId":"{target.account}","type":"AWS::KMS::Key","ARN":"{target.arn}"}}]'
        )
        t.add(second, api_call(c, second, p, KMS, "ReEncrypt", params, read_only=True, resources=resources))
    secret = c.world.secret(c.account, c.region, "prod/erp/sap-service-user")
    second += 120
    params = shapes.json_text({"secretId": secret.arn, "kmsKeyId": target.arn})
    response = shapes.json_text({"arn": secret.arn, "name": secret.name})
    t.add(second, api_call(c, second, p, SM, "UpdateSecret", params, read_only=False, response=response))
    return t.done(p, target.arn)
