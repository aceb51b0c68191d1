"""CloudTrail's digest-signing public keys (the `ListPublicKeys` response) and checking a signature with them.

A key is found by the digest's `digestPublicKeyFingerprint`. The keys come from the API through a CloudTrail
client passed in (`from_client`) or from a saved response (`aws cloudtrail list-public-keys > keys.json`, or the
file `keytrail simulate` writes): `PublicKeyList[].Value` is the DER key, base64 in JSON.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipeline.integrity.digest_file import SIGNATURE_ALGORITHM


class KeyFileError(ValueError):
    """A --public-keys file that is not a ListPublicKeys response."""


@dataclass(frozen=True)
class PublicKeys:
    """RSA public keys by fingerprint (lower-case hex)."""

    by_fingerprint: Mapping[str, rsa.RSAPublicKey]

    def check(self, fingerprint: str, algorithm: str, signature_hex: str, message: bytes) -> str | None:
        """None when `signature_hex` is a valid signature of `message`; otherwise why not (for the reason)."""
        if algorithm != SIGNATURE_ALGORITHM:
            return f"signature algorithm {algorithm!r} is not {SIGNATURE_ALGORITHM}"
        key = self.by_fingerprint.get(fingerprint.lower())
        if key is None:
            return f"no CloudTrail public key has fingerprint {fingerprint} (signed with a key CloudTrail never issued)"
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            return "the signature is not hex"
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return f"the signature does not verify with key {fingerprint}"
        return None


def _load_key(value: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(value)  # PKCS#1 RSAPublicKey or SubjectPublicKeyInfo
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"a public key is not DER: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError("a public key is not an RSA key")
    return key


def from_response(response: Mapping[str, Any]) -> PublicKeys:
    """Keys from a ListPublicKeys response (boto3's dict with bytes, or its JSON form with base64)."""
    entries = response.get("PublicKeyList")
    if not isinstance(entries, list):
        raise KeyFileError("no PublicKeyList: expected the JSON of `aws cloudtrail list-public-keys`")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for entry in entries:
        value, fingerprint = entry.get("Value"), entry.get("Fingerprint")
        if not isinstance(fingerprint, str) or not isinstance(value, str | bytes):
            raise KeyFileError("each PublicKeyList entry needs Value and Fingerprint")
        try:
            der = value if isinstance(value, bytes) else base64.b64decode(value, validate=True)
        except ValueError:
            raise KeyFileError(f"the Value of key {fingerprint} is not base64") from None
        keys[fingerprint.lower()] = _load_key(der)
    return PublicKeys(keys)


def from_file(path: Path) -> PublicKeys:
    try:
        return from_response(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"cannot read public keys from {path}: {exc}") from None


def load(location: str | Path, s3_client: Any | None = None) -> PublicKeys:
    """Keys from a saved ListPublicKeys response: a file, or `s3://bucket/key` (read with `s3_client`)."""
    text = str(location)
    if not text.startswith("s3://"):
        return from_file(Path(text))
    bucket, _, key = text[len("s3://") :].partition("/")
    if s3_client is None or not key:
        raise KeyFileError(f"{text}: reading public keys from S3 needs an s3://bucket/key and an S3 client")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        return from_response(json.loads(body))
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{text} is not JSON: {exc}") from None


def per_region(client_for: Callable[[str], Any], start: dt.datetime, end: dt.datetime) -> Callable[[str], PublicKeys]:
    """A region -> keys lookup asking CloudTrail's ListPublicKeys in that region once (each region signs with
    its own keys); `client_for(region)` makes the CloudTrail client."""
    found: dict[str, PublicKeys] = {}

    def keys(region: str) -> PublicKeys:
        if region not in found:
            found[region] = from_client(client_for(region), start, end)
        return found[region]

    return keys


def from_client(client: Any, start: dt.datetime, end: dt.datetime) -> PublicKeys:
    """Keys valid in [start, end] from CloudTrail's ListPublicKeys (paginated by NextToken)."""
    entries: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StartTime": start, "EndTime": end}
    while True:
        page = client.list_public_keys(**kwargs)
        entries.extend(page.get("PublicKeyList", []))
        token = page.get("NextToken")
        if not token:
            return from_response({"PublicKeyList": entries})
        kwargs["NextToken"] = token
