"""The everyday KMS + Secrets Manager workloads of the organization (see `lookalikes` for the look-alikes).

Workloads run on diurnal profiles with Poisson noise: app servers decrypting with per-tenant encryption
contexts, lambdas reading secrets, SSE-KMS through S3 (for the caller, and S3's own bucket-key calls), EBS,
engineers browsing keys and secrets, KMS's own key rotation.
"""

from __future__ import annotations

from pipeline.simulate import lookalikes, routine, shapes
from pipeline.simulate.calls import Chunk, api_call, kms_crypto, secret_read, service_call, service_event
from pipeline.simulate.identities import (
    BILLING_TENANTS,
    EBS_VOLUMES,
    LEDGER_IDS,
    ONBOARDED_TENANTS,
    ORDERS_TENANTS,
    PROD_SECRETS,
    Key,
    Principal,
)
from pipeline.simulate.schedule import (
    BUSINESS,
    DAYTIME,
    FLAT,
    OFFICE,
    ONBOARDING_SECOND,
    STREAMS,
    Budget,
    Plan,
    context,
    diurnal,
    region_of,
)
from pipeline.simulate.shapes import KMS, SM


def _tenant_crypto(c: Chunk, second: int, p: Principal, key: Key, tenants: tuple[str, ...], purpose: str) -> None:
    op = "Decrypt" if c.rng.random() < 0.7 else "GenerateDataKey"
    tenant = c.pick(tenants)
    kms_crypto(c, second, p, key, op, context(("tenant_id", tenant), ("purpose", purpose)))


def _orders(c: Chunk, plan: Plan, per_day: float, onboarding: bool) -> None:
    p, key = c.world.principal("orders-api"), c.world.key(c.account, c.region, "tenant-data-key")
    onboarded = ORDERS_TENANTS + ONBOARDED_TENANTS
    for second in diurnal(c.rng, per_day, BUSINESS):
        new = onboarding and (
            c.day_index > plan.focus_day or (c.day_index == plan.focus_day and second >= ONBOARDING_SECOND)
        )
        _tenant_crypto(c, second, p, key, onboarded if new else ORDERS_TENANTS, "orders")
    # A lone bad ciphertext now and then (a truncated cache entry) is normal; a burst is not.
    if c.day_index == plan.focus_day or c.rng.random() < 0.5:
        second = c.rng.randrange(8 * 3600, 20 * 3600)
        kms_crypto(c, second, p, key, "Decrypt", None, error=shapes.INVALID_CIPHERTEXT, key_ref=key.arn)


def _simple_crypto(
    c: Chunk,
    label: str,
    alias: str,
    ctx: str | None,
    decrypt_share: float,
    per_day: float,
    profile: tuple[float, ...],
    key_ref: bool = False,
) -> None:
    p, key = c.world.principal(label), c.world.key(c.account, c.region, alias)
    for second in diurnal(c.rng, per_day, profile):
        op = "Decrypt" if c.rng.random() < decrypt_share else "GenerateDataKey"
        kms_crypto(c, second, p, key, op, ctx, key_ref=key.arn if key_ref else None)


def _ledger(c: Chunk, per_day: float) -> None:
    p, key = c.world.principal("ledger-service"), c.world.key(c.account, c.region, "ledger-key")
    for second in diurnal(c.rng, per_day, FLAT):
        op = "Decrypt" if c.rng.random() < 0.6 else "GenerateDataKey"
        ledger = c.pick(LEDGER_IDS)
        kms_crypto(c, second, p, key, op, context(("service", "ledger"), ("ledger_id", ledger)))


def _secret_reads(
    c: Chunk, label: str, names: tuple[str, ...], per_day: float, profile: tuple[float, ...], by_name: bool = False
) -> None:
    p = c.world.principal(label)
    key = c.world.key(c.account, c.region, "secrets-key")
    secrets = [c.world.secret(c.account, c.region, name) for name in names]
    for second in diurnal(c.rng, per_day / 2, profile):  # each read is 2 events (+ Secrets Manager's Decrypt)
        secret_read(c, second, p, c.pick(secrets), key, by_name=by_name)


def _s3_sse(c: Chunk, plan: Plan, label: str, alias: str, bucket: str, per_day: float) -> None:
    """SSE-KMS through S3: S3 calls KMS for the caller (invokedBy s3) or on its own (bucket keys)."""
    p, key = c.world.principal(label), c.world.key(c.account, c.region, alias)
    ctx = context(("aws:s3:arn", f"arn:aws:s3:::{bucket}"))
    for second in diurnal(c.rng, per_day, BUSINESS):
        if c.rng.random() < 0.2:
            params = shapes.crypto_params("GenerateDataKey", key, ctx)
            service_call(
                c, second, "s3.amazonaws.com", KMS, "GenerateDataKey", params, resources=shapes.key_resources(key)
            )
            continue
        write = c.rng.random() < 0.6
        kms_crypto(c, second, p, key, "GenerateDataKey" if write else "Decrypt", ctx, via="s3.amazonaws.com")
        if not plan.kms_only:
            s3_object(c, second, p, bucket, key, write)


def s3_object(c: Chunk, second: int, p: Principal, bucket: str, key: Key, write: bool) -> None:
    """An S3 data event (PutObject/GetObject) on an SSE-KMS bucket."""
    object_key = f"events/dt={c.day.isoformat()}/part-{c.rng.randrange(10**5):05d}.json.gz"
    params = shapes.json_text({
        "bucketName": bucket, "key": object_key, "Host": f"{bucket}.s3.{c.region}.amazonaws.com",
    })  # fmt: skip
    response = shapes.json_text({
        "x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": key.arn,
        "x-amz-server-side-encryption-bucket-key-enabled": True,
    })  # fmt: skip
    size = c.rng.randrange(2_000, 4_000_000)
    additional = shapes.json_text({
        "SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
        "bytesTransferredIn": size if write else 0, "SSEApplied": "SSE_KMS", "AuthenticationMethod": "AuthHeader",
        "bytesTransferredOut": 0 if write else size,
    })  # fmt: skip
    resources = (
        f'[{{"type":"AWS::S3::Object","ARN":"arn:aws:s3:::{bucket}/{object_key}"}},'
        f'{{"accountId":"{c.account}","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::{bucket}"}}]'
    )
    api_call(
        c,
        second,
        p,
        "s3.amazonaws.com",
        "PutObject" if write else "GetObject",
        params,
        read_only=not write,
        response=response if write else "null",
        resources=resources,
        additional=additional,
        category="Data",
        version="1.08",
        request_id=c.s3_request_id(),
    )


_HUMAN_KMS = ("ListAliases", "DescribeKey", "GetKeyRotationStatus", "GetKeyPolicy", "ListKeys")
_HUMAN_SM = ("ListSecrets", "DescribeSecret", "GetSecretValue")


def _humans(c: Chunk, people: tuple[str, ...], per_day: float) -> None:
    """Engineers looking at keys and secrets in the console or CLI."""
    people_here = [c.world.principal(label) for label in people if c.world.has(label)]
    aliases = ("tenant-data-key", "ledger-key", "analytics-key", "secrets-key")
    names = PROD_SECRETS[:20]
    for second in diurnal(c.rng, per_day, OFFICE):
        p = c.pick(people_here)
        if c.rng.random() < 0.6:
            name = c.pick(_HUMAN_KMS)
            key = c.world.key(c.account, c.region, c.pick(aliases))
            if name in ("ListAliases", "ListKeys"):
                api_call(c, second, p, KMS, name, '{"limit":100}', read_only=True)
            else:
                extra = ',"policyName":"default"' if name == "GetKeyPolicy" else ""
                api_call(
                    c,
                    second,
                    p,
                    KMS,
                    name,
                    f'{{"keyId":"{key.arn}"{extra}}}',
                    read_only=True,
                    resources=shapes.key_resources(key),
                )
            continue
        name = c.pick(_HUMAN_SM)
        secret = c.world.secret(c.account, c.region, c.pick(names))
        if name == "ListSecrets":
            api_call(c, second, p, SM, name, '{"maxResults":100}', read_only=True)
        elif name == "DescribeSecret":
            api_call(c, second, p, SM, name, f'{{"secretId":"{secret.arn}"}}', read_only=True)
        else:
            secret_read(c, second, p, secret, c.world.key(c.account, c.region, "secrets-key"))


def _infrastructure(c: Chunk) -> None:
    """EBS volumes attached at instance start, and KMS's own automatic key rotation."""
    p, key = c.world.principal("ebs-infra"), c.world.key(c.account, c.region, "ebs-key")
    for second in diurnal(c.rng, 6, BUSINESS):
        volume = c.pick(EBS_VOLUMES)
        kms_crypto(c, second, p, key, "Decrypt", context(("aws:ebs:id", volume)))
    if c.day_index % 5 == 2:
        aliases = ("tenant-data-key", "ledger-key", "etl-key", "analytics-key")
        rotated = c.world.key(c.account, c.region, aliases[c.day_index // 5 % len(aliases)])
        service_event(
            c,
            3600 + c.rng.randrange(3600),
            KMS,
            "RotateKey",
            resources=shapes.key_resources(rotated),
            details=f'{{"keyId":"{rotated.key_id}"}}',
            invoked_by="AWS Internal",
        )


_PROD_PEOPLE = ("alice", "bob", "carol", "dave", "mallory", "trent", "judy", "oscar")


def _run_stream(c: Chunk, plan: Plan, label: str, per_day: float) -> None:
    account = c.account
    if label in ("orders-api", "orders-api-eu"):
        _orders(c, plan, per_day, onboarding=True)
    elif label == "billing-worker":
        p, key = c.world.principal("billing-worker"), c.world.key(account, c.region, "tenant-data-key")
        for second in diurnal(c.rng, per_day, BUSINESS):
            _tenant_crypto(c, second, p, key, BILLING_TENANTS, "billing")
    elif label == "reporting-svc":
        _simple_crypto(c, label, "analytics-key", context(("app", "reporting")), 0.9, per_day, DAYTIME)
    elif label == "payments-lambda":
        _secret_reads(c, label, ("prod/payments/stripe-api-key", "prod/payments/webhook-secret"), per_day, BUSINESS)
    elif label == "ledger-service":
        _ledger(c, per_day)
    elif label == "import-worker":
        feed = ("partner-feed", "acme-sftp") if c.rng.random() < 0.5 else ("partner-feed", "globex-api")
        _simple_crypto(c, label, "import-key", context(("source", feed[0]), ("feed", feed[1])), 0.8, per_day, BUSINESS)
    elif label == "legacy-batch":
        _simple_crypto(c, label, "legacy-key", None, 1.0, per_day, FLAT, key_ref=True)
    elif label == "data-lake-writer":
        _s3_sse(c, plan, label, "s3-data-key", f"prod-data-lake-{account}", per_day)
    elif label == "prod-humans":
        _humans(c, _PROD_PEOPLE, per_day)
    elif label == "glue-etl":
        _s3_sse(c, plan, label, "lake-key", f"analytics-lake-{account}", per_day)
    elif label == "glue-secrets":
        _secret_reads(c, "glue-etl", ("analytics/redshift-password", "analytics/snowflake-key"), per_day, BUSINESS)
    elif label == "artifact-builder":
        _s3_sse(c, plan, label, "artifacts-key", f"build-artifacts-{account}", per_day)
    elif label == "ci-secrets":
        names = ("ci/npm-token", "ci/dockerhub-password", "ci/sonar-token")
        _secret_reads(c, "artifact-builder", names, per_day, OFFICE, by_name=True)
    elif label in ("analytics-humans", "shared-humans", "dev-humans"):
        _humans(c, (STREAMS[label][0],), per_day)
    elif label == "dev-app":
        _simple_crypto(c, label, "dev-key", context(("env", "dev")), 0.7, per_day, OFFICE)


def generate(c: Chunk, plan: Plan, budget: Budget) -> None:
    """All baseline KMS + Secrets Manager records of one chunk."""
    world = c.world
    for label, (principal, _account, secondary, _profile, _weight) in STREAMS.items():
        mine = world.has(principal) and world.principal(principal).account == c.account
        if mine and region_of(world, secondary) == c.region:
            _run_stream(c, plan, label, budget.per_day(label))
    lookalikes.cross_account(c, plan, budget)
    routine.generate(c, plan, budget)
    if c.account == world.account("prod") and c.region == world.regions[0]:
        lookalikes.nightly_batch(c, budget)
        lookalikes.deploys(c)
        lookalikes.rotations(c)
        lookalikes.sporadic_denials(c, plan)
        lookalikes.platform_admin(c, plan)
        _infrastructure(c)
