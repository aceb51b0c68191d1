"""Injectable incidents: each one is the pattern one detection exists to find, placed at its own hour of the
focus day (by default the last simulated day) so that a one-hour detection window catches each.

Incident principals are never look-alike principals, so "every incident found" and "no look-alike flagged"
can be asserted independently. Sizes are relative to the principal's own baseline (a spike is ~20x the
busiest normal hour) with floors, so small test trails still carry an unmistakable signal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.simulate import attacks, shapes
from pipeline.simulate.calls import (
    Chunk,
    api_call,
    batch_secret_read,
    clamp,
    kms_crypto,
    secret_read,
    service_event,
)
from pipeline.simulate.identities import DATASETS, LEDGER_IDS, ORDERS_TENANTS, PROD_SECRETS, Principal, World
from pipeline.simulate.lookalikes import rotate_secret
from pipeline.simulate.results import InjectedIncident
from pipeline.simulate.schedule import Budget, burst, context, region_of
from pipeline.simulate.shapes import KMS, SM

# name -> (detection that must find it, hour of the focus day (UTC), in the secondary region?)
INCIDENTS: dict[str, tuple[str, int, bool]] = {
    "decrypt_spike": ("kms_decrypt_volume_spike", 3, False),
    "secrets_spike": ("secrets_retrieval_spike", 4, False),
    "access_denied_storm": ("access_denied_storm", 5, False),
    "invalid_ciphertext_burst": ("kms_invalid_ciphertext_burst", 7, False),
    "key_deletion": ("kms_key_deletion_or_disable", 8, True),
    "key_policy_exposure": ("kms_key_policy_exposure", 9, False),
    "cross_account_use": ("kms_cross_account_use", 10, False),
    "secrets_enumeration": ("secrets_enumeration", 11, False),
    "rotation_failure": ("secrets_rotation_failure", 12, False),
    "context_scanning": ("kms_context_scanning", 15, False),
    "context_schema_break": ("kms_context_schema_break", 16, False),
    "secrets_policy_exposure": ("secrets_policy_exposure", 17, False),
    "secrets_deletion": ("secrets_deletion", 18, False),
    # the evasive ones (pipeline/simulate/attacks.py): they choose their own times, some across clock hours
    "bring_your_own_key": ("kms_external_key_use", 0, False),
    "secrets_replicated_away": ("secrets_replication_exfil", 1, False),
    "straddling_burst": ("kms_decrypt_volume_spike", 13, False),
    "paced_exfiltration": ("kms_decrypt_volume_spike", 19, False),
    "paced_enumeration": ("secrets_enumeration", 2, False),
    "paced_denial_probe": ("access_denied_storm", 8, False),
    "straddling_context_scan": ("kms_context_scanning", 21, False),
}
ALL_INCIDENTS: tuple[str, ...] = tuple(INCIDENTS)
# What `simulate` injects unless told otherwise (the demo, the benchmarks): one incident per clock hour, each
# found by a scheduled one-hour run. The evasive ones are asked for by name (tests/test_detection_quality.py).
EVASIVE_INCIDENTS: tuple[str, ...] = (
    "bring_your_own_key",
    "secrets_replicated_away",
    "straddling_burst",
    "paced_exfiltration",
    "paced_enumeration",
    "paced_denial_probe",
    "straddling_context_scan",
)
DEFAULT_INCIDENTS: tuple[str, ...] = tuple(name for name in INCIDENTS if name not in EVASIVE_INCIDENTS)

STORM_IP = "203.0.113.201"  # the stolen access key is used from outside the company network


@dataclass(frozen=True)
class IncidentPlan:
    name: str
    account: str
    region: str
    day_index: int
    hour: int


def plan_incidents(world: World, names: Sequence[str], focus_day: int) -> list[IncidentPlan]:
    unknown = [name for name in names if name not in INCIDENTS]
    if unknown:
        raise ValueError(f"unknown incident(s) {', '.join(unknown)}; choose from: {', '.join(ALL_INCIDENTS)}")
    prod = world.account("prod") or world.account_ids[0]
    return [
        IncidentPlan(name, prod, region_of(world, INCIDENTS[name][2]), focus_day, INCIDENTS[name][1])
        for name in dict.fromkeys(names)  # ordered, unique
    ]


class _Trace:
    """Collects an incident's signature events while it is being written."""

    def __init__(self, c: Chunk, name: str) -> None:
        self.c, self.name = c, name
        self.seconds: list[int] = []
        self.ids: list[str] = []

    def add(self, second: int, event_id: str) -> None:
        self.seconds.append(second)
        self.ids.append(event_id)

    def done(self, principal: Principal | None, resource_arn: str | None) -> InjectedIncident:
        return InjectedIncident(
            self.name,
            INCIDENTS[self.name][0],
            principal.arn if principal else None,
            resource_arn,
            self.c.account,
            self.c.moment(min(self.seconds)),
            self.c.moment(max(self.seconds)),
            self.ids,
            self.c.region,
            principal.role_arn if principal else None,
        )


def _decrypt_spike(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """reporting-svc decrypts ~20x its busiest normal hour at 03:00, when it is normally almost idle."""
    p, key = c.world.principal("reporting-svc"), c.world.key(c.account, c.region, "analytics-key")
    ctx = context(("app", "reporting"))
    for second in sorted(burst(c.rng, max(300, round(20 * budget.peak_hourly("reporting-svc"))), start, 2400)):
        t.add(second, kms_crypto(c, second, p, key, "Decrypt", ctx))
    return t.done(p, key.arn)


def _secrets_spike(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """payments-lambda pulls its API key ~20x its normal hourly rate (a leaked function URL being hammered)."""
    p, key = c.world.principal("payments-lambda"), c.world.key(c.account, c.region, "secrets-key")
    secret = c.world.secret(c.account, c.region, "prod/payments/stripe-api-key")
    reads = max(200, round(20 * budget.peak_hourly("payments-lambda") / 2))
    for second in sorted(burst(c.rng, reads, start, 1800)):
        t.add(second, secret_read(c, second, p, secret, key))
    return t.done(p, secret.arn)


def _access_denied_storm(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """A stolen IAM user key tried against every key and many secrets within four minutes."""
    p = c.world.principal("svc-backup")
    aliases = (
        "tenant-data-key",
        "ledger-key",
        "etl-key",
        "analytics-key",
        "import-key",
        "legacy-key",
        "shared-data-key",
        "secrets-key",
        "s3-data-key",
        "ebs-key",
        "billing-archive-key",
        "backup-key",
    )
    keys = [c.world.key(c.account, c.region, alias) for alias in aliases]
    secrets = [c.world.secret(c.account, c.region, name) for name in PROD_SECRETS[:20]]
    secrets_key = c.world.key(c.account, c.region, "secrets-key")
    second = start
    for attempt in range(64):
        second = clamp(second + c.rng.randrange(2, 6))
        if attempt % 2 == 0:
            key = keys[attempt // 2 % len(keys)]
            op = "Decrypt" if attempt % 4 == 0 else "GenerateDataKey"
            message = shapes.denied_message(p.arn, f"kms:{op}", key.arn)
            event_id = kms_crypto(
                c, second, p, key, op, None, error="AccessDenied", message=message, ip=STORM_IP, key_ref=key.arn
            )
        else:
            secret = secrets[attempt // 2 % len(secrets)]
            code = "AccessDenied" if attempt % 3 else "AccessDeniedException"
            event_id = secret_read(c, second, p, secret, secrets_key, error=code, ip=STORM_IP)
        t.add(second, event_id)
    return t.done(p, None)


def _invalid_ciphertext_burst(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """import-worker fed tampered ciphertexts: 40 failed Decrypts in three minutes."""
    p, key = c.world.principal("import-worker"), c.world.key(c.account, c.region, "import-key")
    ctx = context(("source", "partner-feed"), ("feed", "acme-sftp"))
    for index, second in enumerate(sorted(burst(c.rng, 40, start, 180))):
        if index % 4 == 3:
            error, message = shapes.INCORRECT_KEY, shapes.INCORRECT_KEY_MESSAGE
        else:
            error, message = shapes.INVALID_CIPHERTEXT, None
        t.add(second, kms_crypto(c, second, p, key, "Decrypt", ctx, error=error, message=message, key_ref=key.arn))
    return t.done(p, key.arn)


def _key_deletion(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """An admin session disables a key, then schedules its deletion with the shortest window."""
    p, key = c.world.principal("mallory"), c.world.key(c.account, c.region, "billing-archive-key")
    resources = shapes.key_resources(key)
    api_call(c, start, p, KMS, "DescribeKey", f'{{"keyId":"{key.arn}"}}', read_only=True, resources=resources)
    t.add(
        start + 35,
        api_call(c, start + 35, p, KMS, "DisableKey", f'{{"keyId":"{key.arn}"}}', read_only=False, resources=resources),
    )
    deletion = shapes.aws_date_text(c.moment(start + 80) + dt.timedelta(days=7))
    response = shapes.json_text(
        {"keyId": key.arn, "keyState": "PendingDeletion", "deletionDate": deletion, "pendingWindowInDays": 7}
    )
    t.add(
        start + 80,
        api_call(
            c,
            start + 80,
            p,
            KMS,
            "ScheduleKeyDeletion",
            f'{{"keyId":"{key.arn}","pendingWindowInDays":7}}',
            read_only=False,
            response=response,
            resources=resources,
        ),
    )
    return t.done(p, key.arn)


def _key_policy_exposure(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """The shared key's policy is rewritten to let an account outside the organization use it."""
    p, key = c.world.principal("trent"), c.world.key(c.account, c.region, "shared-data-key")
    resources = shapes.key_resources(key)
    api_call(
        c,
        start,
        p,
        KMS,
        "GetKeyPolicy",
        f'{{"keyId":"{key.arn}","policyName":"default"}}',
        read_only=True,
        resources=resources,
    )
    params = shapes.json_text(
        {
            "keyId": key.arn,
            "policyName": "default",
            "bypassPolicyLockoutSafetyCheck": False,
            "policy": shapes.external_key_policy(c.account, c.world.external_account),
        }
    )
    t.add(start + 50, api_call(c, start + 50, p, KMS, "PutKeyPolicy", params, read_only=False, resources=resources))
    return t.done(p, key.arn)


def _cross_account_use(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """A principal of an account outside the organization decrypts with the (now exposed) shared key."""
    p, key = c.world.principal("partner-sync"), c.world.key(c.account, c.region, "shared-data-key")
    for second in sorted(burst(c.rng, 12, start, 360)):
        dataset = c.pick(DATASETS)
        t.add(second, kms_crypto(c, second, p, key, "Decrypt", context(("dataset", dataset)), shared=c.uid()))
    return t.done(p, key.arn)


def _secrets_enumeration(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """A CI runner's stolen session lists secrets, reads 26 one by one, then 10 more in one batch."""
    p, key = c.world.principal("gh-actions-runner"), c.world.key(c.account, c.region, "secrets-key")
    secrets = [c.world.secret(c.account, c.region, name) for name in PROD_SECRETS[4:40]]
    second = start
    for _ in range(2):
        t.add(second, api_call(c, second, p, SM, "ListSecrets", '{"maxResults":100}', read_only=True))
        second += 3
    for secret in secrets[:26]:
        second = clamp(second + c.rng.randrange(3, 8))
        t.add(second, secret_read(c, second, p, secret, key))
    second = clamp(second + 5)
    t.add(second, batch_secret_read(c, second, p, secrets[26:], key))
    return t.done(p, None)


def _rotation_failure(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """Rotation of the message-queue credentials fails at the setSecret step."""
    lam, key = c.world.principal("mq-rotation-lambda"), c.world.key(c.account, c.region, "secrets-key")
    secret = c.world.secret(c.account, c.region, "prod/queue/rabbitmq-admin")
    failure = (
        f"Error when executing lambda arn:aws:lambda:{c.region}:{c.account}:function:{lam.name} during setSecret step"
    )
    t.add(start + 9, rotate_secret(c, start, lam, secret, key, 1, failure))
    return t.done(None, secret.arn)


def _context_scanning(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """billing-worker (normally 3 tenants) decrypts records of 60 tenants in 15 minutes."""
    p, key = c.world.principal("billing-worker"), c.world.key(c.account, c.region, "tenant-data-key")
    tenants = list(ORDERS_TENANTS) + [f"t-{3001 + i}" for i in range(52)]
    for tenant, second in zip(tenants, sorted(burst(c.rng, len(tenants), start, 900)), strict=True):
        ctx = context(("tenant_id", tenant), ("purpose", "billing"))
        t.add(second, kms_crypto(c, second, p, key, "Decrypt", ctx))
    return t.done(p, key.arn)


def _context_schema_break(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """ledger-service calls its key without the usual context, then with a different context key set."""
    p, key = c.world.principal("ledger-service"), c.world.key(c.account, c.region, "ledger-key")
    for index, second in enumerate(sorted(burst(c.rng, 20, start, 600))):
        ctx = None if index < 12 else context(("ledger_id", LEDGER_IDS[index % len(LEDGER_IDS)]), ("export", "full"))
        t.add(second, kms_crypto(c, second, p, key, "Decrypt", ctx))
    return t.done(p, key.arn)


def _secrets_policy_exposure(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """A secret's resource policy is opened to every AWS principal."""
    p = c.world.principal("judy")
    secret = c.world.secret(c.account, c.region, "prod/partners/api-token")
    params = shapes.json_text(
        {"secretId": secret.arn, "resourcePolicy": shapes.public_secret_policy(), "blockPublicPolicy": False}
    )
    response = shapes.json_text({"arn": secret.arn, "name": secret.name})
    t.add(start, api_call(c, start, p, SM, "PutResourcePolicy", params, read_only=False, response=response))
    return t.done(p, secret.arn)


def _secrets_deletion(c: Chunk, t: _Trace, start: int, budget: Budget) -> InjectedIncident:
    """A secret deleted with ForceDeleteWithoutRecovery: gone at once, no recovery window."""
    p = c.world.principal("oscar")
    secret = c.world.secret(c.account, c.region, "prod/legacy/ftp-password")
    params = shapes.json_text({"secretId": secret.arn, "forceDeleteWithoutRecovery": True})
    response = shapes.json_text(
        {"arn": secret.arn, "name": secret.name, "deletionDate": shapes.aws_date_text(c.moment(start))}
    )
    t.add(start, api_call(c, start, p, SM, "DeleteSecret", params, read_only=False, response=response))
    additional = shapes.json_text({"ARN": secret.arn, "Name": secret.name})
    request = f"SecretDeleteMessage:{secret.arn}:{c.at(start)}:Forced"
    for offset, name in ((7, "StartSecretVersionDelete"), (8, "EndSecretVersionDelete")):
        service_event(c, clamp(start + offset), SM, name, additional=additional, request_id=request)
    return t.done(p, secret.arn)


_BUILDERS: dict[str, Callable[[Chunk, _Trace, int, Budget], InjectedIncident]] = {
    "decrypt_spike": _decrypt_spike,
    "secrets_spike": _secrets_spike,
    "access_denied_storm": _access_denied_storm,
    "invalid_ciphertext_burst": _invalid_ciphertext_burst,
    "key_deletion": _key_deletion,
    "key_policy_exposure": _key_policy_exposure,
    "cross_account_use": _cross_account_use,
    "secrets_enumeration": _secrets_enumeration,
    "rotation_failure": _rotation_failure,
    "context_scanning": _context_scanning,
    "context_schema_break": _context_schema_break,
    "secrets_policy_exposure": _secrets_policy_exposure,
    "secrets_deletion": _secrets_deletion,
    "bring_your_own_key": attacks.bring_your_own_key,
    "secrets_replicated_away": attacks.secrets_replicated_away,
    "straddling_burst": attacks.straddling_burst,
    "paced_exfiltration": attacks.paced_exfiltration,
    "paced_enumeration": attacks.paced_enumeration,
    "paced_denial_probe": attacks.paced_denial_probe,
    "straddling_context_scan": attacks.straddling_context_scan,
}


def inject(c: Chunk, plans: Sequence[IncidentPlan], budget: Budget) -> list[InjectedIncident]:
    """Write the incidents planned for this chunk; each draws from its own RNG (adding one changes no other)."""
    found: list[InjectedIncident] = []
    for plan in plans:
        if (plan.account, plan.region, plan.day_index) != (c.account, c.region, c.day_index):
            continue
        own = Chunk(c.world, c.account, c.region, c.day, c.day_index, f"{c.world.seed}:incident:{plan.name}")
        start = plan.hour * 3600 + 300 + own.rng.randrange(300)
        found.append(_BUILDERS[plan.name](own, _Trace(own, plan.name), start, budget))
        c.events.extend(own.events)
    return found
