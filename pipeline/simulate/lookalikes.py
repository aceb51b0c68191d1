"""The benign look-alikes: always in the baseline, guaranteed on the focus day (when the incidents land),
because they are what the detections must stay quiet on.

A nightly batch job (same big decrypt volume at the same hour every night), sporadic single denials, a tenant
onboarding (in `workloads`: new encryption-context tenants on the focus day), an org-internal cross-account
caller (recorded in both accounts), an org-scoped `*` key policy, a deploy pipeline reading its usual dozen
secrets on every deploy, routine secret rotation, and a key that never had an encryption context.
"""

from __future__ import annotations

import random

from pipeline.simulate import routine, shapes
from pipeline.simulate.calls import Chunk, api_call, clamp, kms_crypto, secret_read, secret_version, service_event
from pipeline.simulate.identities import (
    DATASETS,
    DEPLOY_SECRETS,
    ONBOARDED_TENANTS,
    PROD_SECRETS,
    ROTATED_SECRETS,
    Key,
    Principal,
    Secret,
    World,
)
from pipeline.simulate.results import BenignActor
from pipeline.simulate.schedule import (
    ADMIN_SECOND,
    DEPLOY_HOURS,
    NIGHTLY_SECONDS,
    NIGHTLY_START,
    ROTATION_START,
    XACCT_START,
    Budget,
    Plan,
    burst,
    context,
)
from pipeline.simulate.shapes import KMS, SM


def nightly_batch(c: Chunk, budget: Budget) -> None:
    """The nightly batch job: the same big decrypt volume at the same hour every night."""
    p, key = c.world.principal("nightly-etl"), c.world.key(c.account, c.region, "etl-key")
    count = round(budget.nightly * (0.97 + 0.06 * c.rng.random()))
    start = NIGHTLY_START + c.rng.randrange(180)
    ctx = context(("job", "nightly-etl"))
    for second in burst(c.rng, count, start, NIGHTLY_SECONDS):
        kms_crypto(c, second, p, key, "Decrypt" if c.rng.random() < 0.8 else "GenerateDataKey", ctx)


def deploys(c: Chunk) -> None:
    """The deploy pipeline reads its usual dozen secrets on every deploy."""
    p, key = c.world.principal("deploy-pipeline"), c.world.key(c.account, c.region, "secrets-key")
    secrets = [c.world.secret(c.account, c.region, name) for name in PROD_SECRETS[:DEPLOY_SECRETS]]
    for hour in DEPLOY_HOURS:
        second = hour * 3600 + c.rng.randrange(50 * 60)
        for secret in secrets:
            second += c.rng.randrange(1, 4)
            secret_read(c, clamp(second), p, secret, key, by_name=True)


def rotations(c: Chunk) -> None:
    """Routine rotation of the database secrets: RotationStarted ... RotationSucceeded, every third day."""
    lam, key = c.world.principal("rotation-lambda"), c.world.key(c.account, c.region, "secrets-key")
    for index, name in enumerate(ROTATED_SECRETS):
        if (c.day_index + index) % 3:
            continue
        secret = c.world.secret(c.account, c.region, name)
        epoch = (c.day_index + index) // 3
        rotate_secret(c, ROTATION_START + index * 600 + c.rng.randrange(300), lam, secret, key, epoch, None)


def rotate_secret(
    c: Chunk, second: int, lam: Principal, secret: Secret, key: Key, epoch: int, failure: str | None
) -> str:
    """A rotation run; with `failure` the lambda breaks at setSecret and RotationFailed is recorded.

    Returns the eventID of the final service event (RotationSucceeded or RotationFailed).
    """
    request = f"Rotation-{secret.arn}-{c.uid()}"
    additional = f'{{"SecretId":"{secret.arn}"}}'
    service_event(c, second, SM, "RotationStarted", additional=additional, request_id=request)
    arn = f'{{"secretId":"{secret.arn}"}}'
    api_call(c, clamp(second + 2), lam, SM, "DescribeSecret", arn, read_only=True)
    secret_read(c, clamp(second + 3), lam, secret, key, epoch=epoch - 1)
    api_call(
        c,
        clamp(second + 3),
        lam,
        SM,
        "GetRandomPassword",
        '{"passwordLength":32,"excludeCharacters":"/@\\"\'\\\\"}',
        read_only=True,
    )
    new_version = secret_version(c.world, secret, epoch)
    put = shapes.json_text({"secretId": secret.arn, "clientRequestToken": new_version, "versionStages": ["AWSPENDING"]})
    response = shapes.json_text({"arn": secret.arn, "versionId": new_version, "versionStages": ["AWSPENDING"]})
    api_call(c, clamp(second + 4), lam, SM, "PutSecretValue", put, read_only=False, response=response)
    kms_crypto(c, clamp(second + 4), lam, key, "GenerateDataKey", shapes.secret_context(secret, new_version), via=SM)
    if failure is not None:
        return service_event(
            c, clamp(second + 9), SM, "RotationFailed", additional=additional, request_id=request, message=failure
        )
    secret_read(c, clamp(second + 6), lam, secret, key, epoch=epoch)
    stage = shapes.json_text(
        {
            "secretId": secret.arn,
            "versionStage": "AWSCURRENT",
            "moveToVersionId": new_version,
            "removeFromVersionId": secret_version(c.world, secret, epoch - 1),
        }
    )
    api_call(c, clamp(second + 8), lam, SM, "UpdateSecretVersionStage", stage, read_only=False)
    return service_event(c, clamp(second + 9), SM, "RotationSucceeded", additional=additional, request_id=request)


def sporadic_denials(c: Chunk, plan: Plan) -> None:
    """A few single denials a day (a engineer trying a key or secret they lack): never a storm."""
    count = 2 if c.day_index == plan.focus_day else c.rng.randrange(3)
    hours = c.rng.sample(range(8, 19), 2)
    for index in range(count):
        second = hours[index] * 3600 + c.rng.randrange(3600)
        if index % 2 == 0:
            p, key = c.world.principal("alice"), c.world.key(c.account, c.region, "legacy-key")
            message = shapes.denied_message(p.arn, "kms:Decrypt", key.arn)
            kms_crypto(c, second, p, key, "Decrypt", None, error="AccessDenied", message=message)
        else:
            p = c.world.principal("bob")
            secret = c.world.secret(c.account, c.region, "prod/payments/stripe-api-key")
            key = c.world.key(c.account, c.region, "secrets-key")
            secret_read(c, second, p, secret, key, error="AccessDeniedException")


def cross_account(c: Chunk, plan: Plan, budget: Budget) -> None:
    """The analytics account decrypts with prod's shared key every morning: recorded in BOTH accounts,
    so both chunks draw the calls from the same day-seeded RNG and keep their own copy."""
    world = c.world
    prod, analytics = world.account("prod"), world.account("analytics")
    if not budget.xacct or c.account not in (prod, analytics) or c.region != world.regions[0] or prod is None:
        return
    shared = random.Random(f"{plan.seed}:xacct:{c.day_index}")
    p, key = world.principal("analytics-reader"), world.key(prod, c.region, "shared-data-key")
    for _ in range(budget.xacct):
        second = XACCT_START + shared.randrange(3600)
        owner_id, caller_id, request_id, shared_id = (shapes.uuid4(shared) for _ in range(4))
        dataset = DATASETS[shared.randrange(len(DATASETS))]
        kms_crypto(
            c,
            second,
            p,
            key,
            "Decrypt",
            context(("dataset", dataset)),
            shared=shared_id,
            request_id=request_id,
            event_id=owner_id if c.account == prod else caller_id,
        )


def platform_admin(c: Chunk, plan: Plan) -> None:
    """Routine key administration: an org-scoped `*` key policy, a grant to the account's own Auto Scaling
    role, rotation turned on. Policy-exposure detections must see these as safe."""
    if c.day_index not in (0, plan.focus_day):
        return
    p, world = c.world.principal("carol"), c.world
    shared = world.key(c.account, c.region, "shared-data-key")
    second = ADMIN_SECOND + c.rng.randrange(600)
    api_call(
        c,
        second,
        p,
        KMS,
        "GetKeyPolicy",
        f'{{"keyId":"{shared.arn}","policyName":"default"}}',
        read_only=True,
        resources=shapes.key_resources(shared),
    )
    params = shapes.json_text(
        {
            "keyId": shared.arn,
            "policyName": "default",
            "bypassPolicyLockoutSafetyCheck": False,
            "policy": shapes.org_scoped_key_policy(c.account, world.org_id),
        }
    )
    api_call(c, second + 40, p, KMS, "PutKeyPolicy", params, read_only=False, resources=shapes.key_resources(shared))
    ebs = world.key(c.account, c.region, "ebs-key")
    grantee = f"arn:aws:iam::{c.account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    grant = shapes.json_text({"keyId": ebs.arn, "granteePrincipal": grantee, "operations": [
        "Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyWithoutPlaintext", "DescribeKey",
        "CreateGrant"]})  # fmt: skip
    response = shapes.json_text({"grantId": f"{c.rng.getrandbits(256):064x}", "keyId": ebs.arn})
    api_call(
        c,
        second + 95,
        p,
        KMS,
        "CreateGrant",
        grant,
        read_only=False,
        response=response,
        resources=shapes.key_resources(ebs),
    )
    tenant = world.key(c.account, c.region, "tenant-data-key")
    api_call(
        c,
        second + 130,
        p,
        KMS,
        "EnableKeyRotation",
        f'{{"keyId":"{tenant.arn}","rotationPeriodInDays":365}}',
        read_only=False,
        resources=shapes.key_resources(tenant),
    )


def benign_actors(world: World, plan: Plan) -> list[BenignActor]:
    """The look-alikes every trail contains, with the detections they resemble."""
    prod, region = world.account("prod") or world.account_ids[0], world.regions[0]

    def actor(name: str, label: str, alias: str | None, description: str, *quiet_for: str) -> BenignActor:
        p = world.principal(label)
        resource = world.key(prod, region, alias).arn if alias else None
        return BenignActor(name, p.arn, resource, p.account, description, quiet_for, p.role_arn)

    deploys = f"reads the same {DEPLOY_SECRETS} secrets on each of {len(DEPLOY_HOURS)} daily deploys"
    actors = [
        actor(
            "nightly_batch",
            "nightly-etl",
            "etl-key",
            "same big Decrypt volume at 02:05 UTC every night",
            "kms_decrypt_volume_spike",
        ),
        actor("sporadic_denial", "alice", "legacy-key", "a single denied Decrypt now and then", "access_denied_storm"),
        actor("sporadic_denial", "bob", None, "a single denied GetSecretValue now and then", "access_denied_storm"),
        actor(
            "tenant_onboarding",
            "orders-api",
            "tenant-data-key",
            f"tenants {', '.join(ONBOARDED_TENANTS)} appear in the encryption context on the focus day",
            "kms_context_scanning",
            "kms_context_schema_break",
        ),
        actor(
            "sporadic_invalid_ciphertext",
            "orders-api",
            "tenant-data-key",
            "one InvalidCiphertextException now and then",
            "kms_invalid_ciphertext_burst",
        ),
        actor(
            "org_scoped_key_policy",
            "carol",
            "shared-data-key",
            "PutKeyPolicy with Principal * limited by aws:PrincipalOrgID; CreateGrant to its own Auto Scaling role",
            "kms_key_policy_exposure",
        ),
        actor("deploy_pipeline", "deploy-pipeline", None, deploys, "secrets_enumeration", "secrets_retrieval_spike"),
        actor(
            "no_context_key",
            "legacy-batch",
            "legacy-key",
            "a key that never had an encryption context",
            "kms_context_schema_break",
        ),
        actor(
            "secret_rotation",
            "rotation-lambda",
            None,
            "the rotation lambda's calls during routine rotation",
            "secrets_rotation_failure",
        ),
    ]
    actors += [
        BenignActor("secret_rotation", None, world.secret(prod, region, name).arn, prod,
                    "RotationSucceeded every third day", ("secrets_rotation_failure",))
        for name in ROTATED_SECRETS
    ]  # fmt: skip
    actors += routine.routine_actors(world, plan)
    if Budget(world, plan).xacct:
        actors.append(
            actor(
                "org_cross_account",
                "analytics-reader",
                "shared-data-key",
                "an org account decrypting with prod's shared key every morning",
                "kms_cross_account_use",
            )
        )
    return actors
