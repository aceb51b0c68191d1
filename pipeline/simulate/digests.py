"""Signed hourly digest files for the simulated trail, chained across days as CloudTrail chains them.

Chunks are generated independently (maybe in worker processes), so a chunk only says which log files each hour
holds (`DigestDay`); the parent process, receiving chunks in day order, builds each digest, hashes it, signs it
with the simulator's RSA key (SHA256withRSA, PKCS#1 v1.5, over CloudTrail's signing string) and links it to the
previous one. The key is derived from the seed (same seed, same bytes). S3 objects carry the signature in
`x-amz-meta-signature` metadata like CloudTrail's; a local folder has no metadata, so the newest digest of each
chain gets a `<digest>.metadata.json` sidecar. `public-keys.json` beside the manifest holds the matching
`ListPublicKeys` response for `keytrail verify --public-keys`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from isal import igzip

from pipeline.integrity.digest_file import (
    HASH_ALGORITHM,
    META_ALGORITHM,
    META_SIGNATURE,
    SIGNATURE_ALGORITHM,
    DigestFile,
    parse_digest,
    sidecar_key,
    signed_message,
)
from pipeline.simulate.shapes import json_text

PUBLIC_KEYS = "public-keys.json"
_GZIP_LEVEL = 2
_KEY_BITS = 2048
_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


@dataclass(frozen=True)
class DigestDay:
    """What a chunk tells the signer: its account/region/day and the log files of each hour (CloudTrail's
    `logFiles` entries)."""

    account: str
    region: str
    day_start: str  # YYYY-MM-DD
    root: str  # <prefix>AWSLogs/[<org>/]<account>/
    trail: str
    home_region: str
    bucket: str
    hours: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def digest_key(self, hour: int) -> str:
        stamp = self.day_start.replace("-", "")
        folder = f"{self.root}CloudTrail-Digest/{self.region}/{self.day_start.replace('-', '/')}/"
        name = f"{self.account}_CloudTrail-Digest_{self.region}_{self.trail}_{self.home_region}_{stamp}T{hour:02d}5959Z"
        return f"{folder}{name}.json.gz"


# --- a deterministic RSA key ---------------------------------------------------------------------------------


def _probable_prime(n: int, rng: random.Random) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random, e: int) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1  # top two bits set: n has exactly 2*bits bits
        if candidate % e != 1 and _probable_prime(candidate, rng):
            return candidate


@cache  # ~1 s of prime search in pure Python: once per process and seed
def signing_key(seed: int, label: str = "cloudtrail") -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key derived from `seed` and `label` (the simulator's stand-in for CloudTrail's key; not for
    real use: anyone with the seed has it)."""
    rng = random.Random(f"keytrail-simulated-rsa:{seed}:{label}")
    e = 65537
    p = _prime(_KEY_BITS // 2, rng, e)
    q = _prime(_KEY_BITS // 2, rng, e)
    while q == p:
        q = _prime(_KEY_BITS // 2, rng, e)
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public)
    return numbers.private_key()


def public_der(key: rsa.RSAPrivateKey) -> bytes:
    """The public key as CloudTrail's ListPublicKeys returns it: PKCS#1 RSAPublicKey, DER."""
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    return hashlib.md5(public_der(key), usedforsecurity=False).hexdigest()


def sign(key: rsa.RSAPrivateKey, digest: DigestFile, digest_sha256: str) -> str:
    return key.sign(signed_message(digest, digest_sha256), padding.PKCS1v15(), hashes.SHA256()).hex()


def public_keys_json(key: rsa.RSAPrivateKey, valid_from: str, valid_until: str) -> bytes:
    """A ListPublicKeys response (as `aws cloudtrail list-public-keys` prints it) naming `key`."""
    entry = {"Value": base64.b64encode(public_der(key)).decode(), "ValidityStartTime": valid_from,
             "ValidityEndTime": valid_until, "Fingerprint": fingerprint(key)}  # fmt: skip
    return json_text({"PublicKeyList": [entry]}).encode()


def digest_body(digest: dict[str, Any]) -> bytes:
    return json_text(digest).encode()


def compress(body: bytes) -> bytes:
    return igzip.compress(body, _GZIP_LEVEL, mtime=0)


# --- chaining and signing -------------------------------------------------------------------------------------


@dataclass
class _Link:
    key: str
    sha256: str
    signature: str


class DigestSigner:
    """Builds and signs the digests of each chunk in day order, one chain per account/region."""

    def __init__(self, seed: int) -> None:
        self.key = signing_key(seed)
        self.fingerprint = fingerprint(self.key)
        self._last: dict[tuple[str, str], _Link] = {}

    def sign_day(self, day: DigestDay) -> Iterator[tuple[str, bytes, dict[str, str]]]:
        """(key, gzip'd digest, S3 metadata) for the day's 24 hourly digests (empty hours included, as
        CloudTrail writes them)."""
        for hour in range(24):
            files = day.hours.get(hour, [])
            previous = self._last.get((day.account, day.region))
            key = day.digest_key(hour)
            fields = {
                "awsAccountId": day.account, "digestStartTime": f"{day.day_start}T{hour:02d}:00:00Z",
                "digestEndTime": f"{day.day_start}T{hour:02d}:59:59Z", "digestS3Bucket": day.bucket,
                "digestS3Object": key, "digestPublicKeyFingerprint": self.fingerprint,
                "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
                "newestEventTime": files[-1]["newestEventTime"] if files else None,
                "oldestEventTime": files[0]["oldestEventTime"] if files else None,
                "previousDigestS3Bucket": day.bucket if previous else None,
                "previousDigestS3Object": previous.key if previous else None,
                "previousDigestHashValue": previous.sha256 if previous else None,
                "previousDigestHashAlgorithm": HASH_ALGORITHM if previous else None,
                "previousDigestSignature": previous.signature if previous else None, "logFiles": files,
            }  # fmt: skip
            body = digest_body(fields)
            link = self.link(key, body)
            self._last[(day.account, day.region)] = link
            yield key, compress(body), {"signature": link.signature, "signature-algorithm": SIGNATURE_ALGORITHM}

    def link(self, key: str, body: bytes) -> _Link:
        sha = hashlib.sha256(body).hexdigest()
        return _Link(key, sha, sign(self.key, parse_digest(body), sha))

    def sidecars(self) -> Iterator[tuple[str, bytes]]:
        """The metadata sidecar of each chain's newest digest (local folders only)."""
        for link in self._last.values():
            yield sidecar(link.key, link.signature)


def sidecar(key: str, signature: str) -> tuple[str, bytes]:
    headers = {META_SIGNATURE: signature, META_ALGORITHM: SIGNATURE_ALGORITHM}
    return sidecar_key(key), json_text(headers).encode()


def write_signing_keys(sink: Any, signer: DigestSigner, start: dt.date, days: int) -> None:
    """`public-keys.json` beside the manifest, and (local folders) each chain's newest-digest sidecar."""
    valid_from = f"{start.isoformat()}T00:00:00Z"
    valid_until = f"{(start + dt.timedelta(days=days)).isoformat()}T00:00:00Z"
    sink.put(sink.dest.prefix + PUBLIC_KEYS, public_keys_json(signer.key, valid_from, valid_until))
    if sink.dest.bucket is None:  # S3 objects carry their signature as metadata
        for key, data in signer.sidecars():
            sink.put(key, data)
