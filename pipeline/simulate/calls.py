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
_S3_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
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

    def s3_request_id(self) -> str:
        """S3 request ids are 16 upper-case characters, not UUIDs."""
        return "".join(self.pick(_S3_ID_CHARS) for _ in range(16))

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


def api_call(
    c: Chunk,
    second: int,
    principal: Principal,
    source: str,
    name: str,
    params: str,
    *,
    read_only: bool,
    via: str | None = None,
    ip: str | None = None,
    event_id: str | None = None,
    request_id: str | None = None,
    response: str = "null",
    resources: str | None = None,
    error: str | None = None,
    message: str | None = None,
    additional: str | None = None,
    shared: str | None = None,
    category: str = "Management",
    region: str | None = None,
    version: str = "1.09",
) -> str:
    """An API call by a principal: made itself (its IP, user agent, VPC endpoint, TLS), or through a service
    (`via`: the service's name as IP and agent, `invokedBy` in the identity). Returns the eventID."""
    if via is not None:
        source_ip, agent, vpce, tls = via, via, None, None
    else:
        source_ip, agent, vpce = principal.source_ip, principal.user_agent, principal.vpc_endpoint
        tls = None if agent == "AWS Internal" else shapes.tls(source, c.region)  # console calls carry none
    event_id = event_id or c.uid()
    text = record(
        version, c.identity(principal, second, via), c.at(second), source, name, region or c.region,
        ip or source_ip, agent, params, request_id or c.uid(), event_id, read_only, c.account, response=response,
        error=error, message=message, additional=additional, resources=resources, shared=shared,
        category=category, vpce=vpce, tls_details=tls,
    )  # fmt: skip
    c.add(second, text)
    return event_id


def kms_crypto(
    c: Chunk,
    second: int,
    principal: Principal,
    key: Key,
    op: str,
    context: str | None,
    *,
    key_ref: str | None = None,
    via: str | None = None,
    **extra: str | None,
) -> str:
    """A cryptographic KMS call (Decrypt, GenerateDataKey, Encrypt); `extra` as for `api_call` (error, ip...)."""
    params = shapes.crypto_params(op, key, context, key_ref=key_ref)
    return api_call(c, second, principal, KMS, op, params, read_only=True, via=via,
                    resources=shapes.key_resources(key), **extra)  # fmt: skip


def secret_version(world: World, secret: Secret, epoch: int) -> str:
    """The version id of a secret in a rotation epoch (stable, so SecretVersionId contexts repeat)."""
    return stable_uuid(world.seed, "version", secret.arn, epoch).upper()


def _decrypted_by_secrets_manager(c: Chunk, second: int, principal: Principal, secret: Secret, key: Key,
                                  epoch: int) -> None:  # fmt: skip
    context = shapes.secret_context(secret, secret_version(c.world, secret, epoch))
    kms_crypto(c, second, principal, key, "Decrypt", context, via=SM)


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
    ref = secret.name if by_name else secret.arn
    message = None
    if error is not None:
        message = shapes.denied_message(principal.arn, "secretsmanager:GetSecretValue", ref)
    event_id = api_call(c, second, principal, SM, "GetSecretValue", f'{{"secretId":"{ref}"}}', read_only=True,
                        ip=ip, error=error, message=message)  # fmt: skip
    if error is None:
        _decrypted_by_secrets_manager(c, second, principal, secret, key, epoch)
    return event_id


def batch_secret_read(c: Chunk, second: int, principal: Principal, secrets: list[Secret], key: Key) -> str:
    """BatchGetSecretValue naming several secrets, and Secrets Manager's Decrypt for each of them."""
    params = shapes.json_text({"secretIdList": [secret.arn for secret in secrets]})
    event_id = api_call(c, second, principal, SM, "BatchGetSecretValue", params, read_only=True)
    for secret in secrets:
        _decrypted_by_secrets_manager(c, clamp(second + 1), principal, secret, key, 0)
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
