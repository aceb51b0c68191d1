"""A CloudTrail digest file: its JSON fields (exactly as AWS writes them), the string its signature covers, and
the names of digest objects. Pure: bytes in, values out.

    {"awsAccountId", "digestStartTime", "digestEndTime", "digestS3Bucket", "digestS3Object",
     "digestPublicKeyFingerprint", "digestSignatureAlgorithm", "newestEventTime", "oldestEventTime",
     "previousDigestS3Bucket", "previousDigestS3Object", "previousDigestHashValue",
     "previousDigestHashAlgorithm", "previousDigestSignature",
     "logFiles": [{"s3Bucket", "s3Object", "hashValue", "hashAlgorithm", "newestEventTime", "oldestEventTime"}]}

The signature (SHA256withRSA, hex) lives outside the file: in the object's `x-amz-meta-signature` metadata, and
in the next digest's `previousDigestSignature`. A starting digest (the first of a chain) has every
`previous*` field null. Backfill digests (`..._backfill.json.gz`) list log files an hourly digest missed.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec

from pipeline.times import parse_timestamp

SIGNATURE_ALGORITHM = "SHA256withRSA"
HASH_ALGORITHM = "SHA-256"
DIGEST_SUFFIX = ".json.gz"
BACKFILL_SUFFIX = "_backfill.json.gz"
# Local folders have no S3 metadata: the newest digest's `x-amz-meta-signature` and
# `x-amz-meta-signature-algorithm` sit beside it in `<digest object>.metadata.json`.
SIDECAR_SUFFIX = ".metadata.json"
META_SIGNATURE = "x-amz-meta-signature"
META_ALGORITHM = "x-amz-meta-signature-algorithm"


class DigestFormatError(ValueError):
    """The bytes are not a CloudTrail digest file."""


class LogFileEntry(msgspec.Struct, frozen=True):
    s3Bucket: str
    s3Object: str
    hashValue: str
    hashAlgorithm: str = HASH_ALGORITHM
    newestEventTime: str | None = None
    oldestEventTime: str | None = None


class DigestFile(msgspec.Struct, frozen=True):
    """The parsed JSON of one digest (field names are CloudTrail's; unknown fields are ignored)."""

    awsAccountId: str
    digestStartTime: str
    digestEndTime: str
    digestS3Bucket: str
    digestS3Object: str
    digestPublicKeyFingerprint: str
    digestSignatureAlgorithm: str = SIGNATURE_ALGORITHM
    newestEventTime: str | None = None
    oldestEventTime: str | None = None
    previousDigestS3Bucket: str | None = None
    previousDigestS3Object: str | None = None
    previousDigestHashValue: str | None = None
    previousDigestHashAlgorithm: str | None = None
    previousDigestSignature: str | None = None
    logFiles: list[LogFileEntry] = msgspec.field(default_factory=list)

    @property
    def start(self) -> dt.datetime:
        return parse_timestamp(self.digestStartTime)

    @property
    def end(self) -> dt.datetime:
        return parse_timestamp(self.digestEndTime)

    @property
    def starts_chain(self) -> bool:
        """A starting digest: logging or validation (re)started here, so no previous digest is named."""
        return self.previousDigestS3Object is None


_decoder = msgspec.json.Decoder(DigestFile)


def parse_digest(text: bytes) -> DigestFile:
    """The digest in `text` (uncompressed JSON); DigestFormatError says what is wrong with it."""
    try:
        digest = _decoder.decode(text)
        digest.start, digest.end  # noqa: B018 - the times must parse too
    except (msgspec.DecodeError, ValueError) as exc:
        raise DigestFormatError(f"not a CloudTrail digest file: {exc}") from None
    return digest


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_message(digest: DigestFile, digest_sha256: str) -> bytes:
    """What CloudTrail signs: end time, bucket/key, the SHA-256 of the uncompressed digest and the previous
    digest's signature (the literal `null` for a chain's first digest), one per line."""
    previous = digest.previousDigestSignature if digest.previousDigestSignature is not None else "null"
    return (
        f"{digest.digestEndTime}\n{digest.digestS3Bucket}/{digest.digestS3Object}\n{digest_sha256}\n{previous}"
    ).encode()


def is_digest_key(key: str) -> bool:
    """A digest object's key (not its local metadata sidecar, not a stray file)."""
    return key.endswith(DIGEST_SUFFIX) and "_CloudTrail-Digest_" in key.rpartition("/")[2]


def is_backfill(key: str) -> bool:
    return key.endswith(BACKFILL_SUFFIX)


def sidecar_key(key: str) -> str:
    return key + SIDECAR_SUFFIX
