"""What a principal does, as CloudTrail records: one `Chunk` per (recorded account, region, day) collects them.

A chunk owns a seeded RNG, so chunks can be generated in any order or process and still give the same bytes.
Each call function appends its record(s) to the chunk and returns the eventID of the main record.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import TypeVar

from pipeline.simulate import shapes
from pipeline.simulate.identities import (
    Key,
    Principal,
    Secret,
    World,
    service_event_identity,
    service_identity,
    stable_uuid,
)
from pipeline.simulate.shapes import KMS, SM, record

LAST_SECOND = 86399
T = TypeVar("T")


class Chunk:
    """The records of one recorded account, region and day, as (second of day, JSON text) pairs."""

    def __init__(self, world: World, account: str, region: str, day: dt.date, day_index: int, seed: str) -> None:
        self.world = world
        self.account = account
        self.region = region
        self.day = day
        self.day_index = day_index
        self.rng = random.Random(seed)
        self.events: list[tuple[int, str]] = []
        self._prefix = day.isoformat() + "T"
        self._identities: dict[tuple[str, int, str | None], str] = {}
        self._hex = ""
        self._hex_at = 0

    def at(self, second: int) -> str:
        return self._prefix + shapes.hms(second) + "Z"

    def moment(self, second: int) -> dt.datetime:
        return dt.datetime.combine(self.day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(seconds=second)

    def uid(self) -> str:
        """A version-4 UUID from the chunk's RNG. Random hex is drawn 512 UUIDs at a time (a hot path)."""
        at = self._hex_at
        if at >= len(self._hex):
            self._hex, at = f"{self.rng.getrandbits(128 * 512):016384x}", 0
        h = self._hex
        self._hex_at = at + 32
        return (
            f"{h[at : at + 8]}-{h[at + 8 : at + 12]}-4{h[at + 13 : at + 16]}-{shapes.UUID_VARIANT[h[at + 16]]}"
            f"{h[at + 17 : at + 20]}-{h[at + 20 : at + 32]}"
        )

    def pick(self, items: Sequence[T]) -> T:
        """A uniform choice (cheaper than Random.choice/randrange on this hot path)."""
        return items[int(self.rng.random() * len(items))]

    def add(self, second: int, text: str) -> None:
        self.events.append((second, text))

    def identity(self, principal: Principal, second: int, invoked_by: str | None = None) -> str:
        # Workload sessions renew hourly, console sessions every 8 hours: one identity text per session.
        span = 8 if principal.kind == "sso" else 1
        block = second // 3600 // span
        cache_key = (principal.label, block, invoked_by)
        found = self._identities.get(cache_key)
        if found is None:
            epoch = (self.day_index * 24) // span + block
            created = self.at(block * span * 3600 + (120 if span > 1 else 0))
            found = principal.identity(epoch, created, invoked_by)
            self._identities[cache_key] = found
        return found


def clamp(second: int) -> int:
    return min(max(second, 0), LAST_SECOND)


def _direct(principal: Principal, service: str, region: str) -> tuple[str, str, str | None, str | None]:
    """(source ip, user agent, vpc endpoint, tls details) of a call the principal makes itself."""
    console = principal.user_agent == "AWS Internal"
    return (
        principal.source_ip,
        principal.user_agent,
        principal.vpc_endpoint,
        None if console else shapes.tls(service, region),
    )


def kms_crypto(
    c: Chunk,
    second: int,
    principal: Principal,
    key: Key,
    op: str,
    context: str | None,
    *,
    via: str | None = None,
    error: str | None = None,
    message: str | None = None,
    key_ref: str | None = None,
    shared: str | None = None,
    event_id: str | None = None,
    request_id: str | None = None,
    ip: str | None = None,
) -> str:
    """A cryptographic KMS call (Decrypt, GenerateDataKey, Encrypt), direct or through a service (`via`)."""
    if via is not None:
        source_ip, agent, vpce, tls = via, via, None, None
    else:
        source_ip, agent, vpce, tls = _direct(principal, KMS, c.region)
    event_id = event_id or c.uid()
    c.add(
        second,
        record(
            "1.09",
            c.identity(principal, second, via),
            c.at(second),
            KMS,
            op,
            c.region,
            ip or source_ip,
            agent,
            shapes.crypto_params(op, key, context, key_ref=key_ref),
            request_id or c.uid(),
            event_id,
            True,
            c.account,
            error=error,
            message=message,
            resources=shapes.key_resources(key),
            shared=shared,
            vpce=vpce,
            tls_details=tls,
        ),
    )
    return event_id


def secret_version(world: World, secret: Secret, epoch: int) -> str:
    """The version id of a secret in a rotation epoch (stable, so SecretVersionId contexts repeat)."""
    return stable_uuid(world.seed, "version", secret.arn, epoch).upper()


def secret_read(
    c: Chunk,
    second: int,
    principal: Principal,
    secret: Secret,
    key: Key,
    *,
    by_name: bool = False,
    epoch: int = 0,
    error: str | None = None,
    ip: str | None = None,
) -> str:
    """GetSecretValue; when it succeeds Secrets Manager decrypts the secret with KMS on the caller's behalf."""
    source_ip, agent, vpce, tls = _direct(principal, SM, c.region)
    ref = secret.name if by_name else secret.arn
    event_id = c.uid()
    message = None
    if error is not None:
        message = shapes.denied_message(principal.arn, "secretsmanager:GetSecretValue", ref)
    c.add(
        second,
        record(
            "1.09",
            c.identity(principal, second),
            c.at(second),
            SM,
            "GetSecretValue",
            secret.region,
            ip or source_ip,
            agent,
            f'{{"secretId":"{ref}"}}',
            c.uid(),
            event_id,
            True,
            c.account,
            error=error,
            message=message,
            vpce=vpce,
            tls_details=tls,
        ),
    )
    if error is None:
        context = shapes.secret_context(secret, secret_version(c.world, secret, epoch))
        kms_crypto(c, second, principal, key, "Decrypt", context, via=SM)
    return event_id


def batch_secret_read(c: Chunk, second: int, principal: Principal, secrets: list[Secret], key: Key) -> str:
    """BatchGetSecretValue naming several secrets, and Secrets Manager's Decrypt for each of them."""
    source_ip, agent, vpce, tls = _direct(principal, SM, c.region)
    event_id = c.uid()
    params = shapes.json_text({"secretIdList": [secret.arn for secret in secrets]})
    c.add(
        second,
        record(
            "1.09",
            c.identity(principal, second),
            c.at(second),
            SM,
            "BatchGetSecretValue",
            c.region,
            source_ip,
            agent,
            params,
            c.uid(),
            event_id,
            True,
            c.account,
            vpce=vpce,
            tls_details=tls,
        ),
    )
    for secret in secrets:
        context = shapes.secret_context(secret, secret_version(c.world, secret, 0))
        kms_crypto(c, clamp(second + 1), principal, key, "Decrypt", context, via=SM)
    return event_id


def api_call(
    c: Chunk,
    second: int,
    principal: Principal,
    source: str,
    name: str,
    params: str,
    *,
    read_only: bool,
    response: str = "null",
    resources: str | None = None,
    error: str | None = None,
    message: str | None = None,
    additional: str | None = None,
    category: str = "Management",
    region: str | None = None,
    version: str = "1.09",
) -> str:
    """Any other API call a principal makes itself (management calls, S3 data events, other services)."""
    source_ip, agent, vpce, tls = _direct(principal, source, c.region)
    event_id = c.uid()
    c.add(
        second,
        record(
            version,
            c.identity(principal, second),
            c.at(second),
            source,
            name,
            region or c.region,
            source_ip,
            agent,
            params,
            c.uid(),
            event_id,
            read_only,
            c.account,
            response=response,
            error=error,
            message=message,
            additional=additional,
            resources=resources,
            category=category,
            vpce=vpce,
            tls_details=tls,
        ),
    )
    return event_id


def service_call(
    c: Chunk,
    second: int,
    service: str,
    source: str,
    name: str,
    params: str,
    *,
    response: str = "null",
    resources: str | None = None,
    read_only: bool = True,
    shared: str | None = None,
) -> str:
    """A call an AWS service makes on its own behalf (userIdentity type AWSService)."""
    event_id = c.uid()
    c.add(
        second,
        record(
            "1.08",
            service_identity(service),
            c.at(second),
            source,
            name,
            c.region,
            service,
            service,
            params,
            c.uid(),
            event_id,
            read_only,
            c.account,
            response=response,
            resources=resources,
            shared=shared,
        ),
    )
    return event_id


def service_event(
    c: Chunk,
    second: int,
    source: str,
    name: str,
    *,
    additional: str | None = None,
    resources: str | None = None,
    message: str | None = None,
    request_id: str | None = None,
    details: str | None = None,
    invoked_by: str | None = None,
) -> str:
    """An AwsServiceEvent (RotationSucceeded/Failed, RotateKey, ...): no principal, only account + service."""
    event_id = c.uid()
    by = invoked_by or source
    c.add(
        second,
        record(
            "1.09",
            service_event_identity(c.account, by),
            c.at(second),
            source,
            name,
            c.region,
            by,
            by,
            "null",
            request_id or c.uid(),
            event_id,
            False,
            c.account,
            message=message,
            additional=additional,
            resources=resources,
            event_type="AwsServiceEvent",
            service_details=details,
        ),
    )
    return event_id
