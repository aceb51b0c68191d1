"""CloudTrail record builders: JSON text assembled from templates, in the key order real trails use.

Records are built as strings (no dict per event, no deep copies): the identity and other repeated parts are
pre-encoded once and spliced in. Values spliced without escaping are ARNs, ids and fixed words; free text
(policies) goes through msgspec. The shapes follow the real events in ../shared/realdata (see MANIFEST.md):
symmetric Decrypt names its key only in resources[], service calls carry `invokedBy`, service events carry no
principal, errors carry errorCode/errorMessage.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from typing import Any

import msgspec

from pipeline.simulate.identities import Key, Secret

KMS = "kms.amazonaws.com"
SM = "secretsmanager.amazonaws.com"

_encode = msgspec.json.encode
UUID_VARIANT = {c: "89ab"[int(c, 16) % 4] for c in "0123456789abcdef"}
_HMS: list[str] = []


def hms(second: int) -> str:
    """'HH:MM:SS' of a second of the day (table built once; formatting per event is a hot path)."""
    if not _HMS:
        _HMS.extend(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400))
    return _HMS[second]


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID drawn from the chunk's seeded RNG (deterministic, unlike uuid.uuid4)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def json_text(value: Any) -> str:
    return _encode(value).decode()


@functools.lru_cache(maxsize=1024)
def tls(service: str, region: str) -> str:
    return (
        '{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256",'
        f'"clientProvidedHostHeader":"{service.split(".")[0]}.{region}.amazonaws.com"}}'
    )


def record(
    version: str,
    identity: str,
    time: str,
    source: str,
    name: str,
    region: str,
    ip: str,
    agent: str,
    params: str,
    request_id: str,
    event_id: str,
    read_only: bool,
    account: str,
    *,
    response: str = "null",
    error: str | None = None,
    message: str | None = None,
    additional: str | None = None,
    resources: str | None = None,
    event_type: str = "AwsApiCall",
    shared: str | None = None,
    vpce: str | None = None,
    tls_details: str | None = None,
    category: str = "Management",
    service_details: str | None = None,
) -> str:
    """One CloudTrail record as JSON text. `params`, `response`, `additional`, `resources` are JSON text."""
    parts = [
        f'{{"eventVersion":"{version}","userIdentity":{identity},"eventTime":"{time}","eventSource":"{source}",'
        f'"eventName":"{name}","awsRegion":"{region}","sourceIPAddress":"{ip}","userAgent":"{agent}"'
    ]
    if error is not None:
        parts.append(f',"errorCode":"{error}"')
    if message is not None:
        parts.append(f',"errorMessage":"{message}"')
    parts.append(f',"requestParameters":{params},"responseElements":{response}')
    if additional is not None:
        parts.append(f',"additionalEventData":{additional}')
    parts.append(f',"requestID":"{request_id}","eventID":"{event_id}","readOnly":{"true" if read_only else "false"}')
    if resources is not None:
        parts.append(f',"resources":{resources}')
    parts.append(f',"eventType":"{event_type}"')
    if service_details is not None:
        parts.append(f',"serviceEventDetails":{service_details}')
    management = "false" if category == "Data" else "true"
    parts.append(f',"managementEvent":{management},"recipientAccountId":"{account}"')
    if shared is not None:
        parts.append(f',"sharedEventID":"{shared}"')
    if vpce is not None:
        parts.append(f',"vpcEndpointId":"{vpce}"')
    parts.append(f',"eventCategory":"{category}"')
    if tls_details is not None:
        parts.append(f',"tlsDetails":{tls_details}')
    parts.append("}")
    return "".join(parts)


# --- KMS pieces --------------------------------------------------------------------------------------------


def key_resources(key: Key) -> str:
    return f'[{{"accountId":"{key.account}","type":"AWS::KMS::Key","ARN":"{key.arn}"}}]'


def crypto_params(op: str, key: Key, context: str | None, *, key_ref: str | None = None) -> str:
    """requestParameters of a cryptographic call. Symmetric Decrypt carries no keyId unless the caller set one."""
    ctx = f',"encryptionContext":{context}' if context is not None else ""
    if op == "Decrypt":
        ref = f',"keyId":"{key_ref}"' if key_ref else ""
        return f'{{"encryptionAlgorithm":"SYMMETRIC_DEFAULT"{ref}{ctx}}}'
    if op == "Encrypt":
        return f'{{"keyId":"{key_ref or key.arn}","encryptionAlgorithm":"SYMMETRIC_DEFAULT"{ctx}}}'
    if op == "GenerateDataKeyWithoutPlaintext":
        return f'{{"keyId":"{key_ref or key.arn}","keySpec":"AES_256"{ctx}}}'
    return f'{{"keyId":"{key_ref or key.arn}","keySpec":"AES_256"{ctx}}}'


def denied_message(principal_arn: str, action: str, resource: str) -> str:
    return (
        f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


INVALID_CIPHERTEXT = "InvalidCiphertextException"
INCORRECT_KEY = "IncorrectKeyException"
INCORRECT_KEY_MESSAGE = "The key ID in the request does not identify a CMK that can perform this operation."


def secret_context(secret: Secret, version_id: str) -> str:
    return f'{{"SecretARN":"{secret.arn}","SecretVersionId":"{version_id}"}}'


# --- policies ----------------------------------------------------------------------------------------------


def _root(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def default_key_policy(account: str) -> dict[str, Any]:
    return {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": _root(account)},
        "Action": "kms:*",
        "Resource": "*",
    }


def org_scoped_key_policy(account: str, org_id: str) -> str:
    """Principal "*" limited to the organization: the usual way to share a key org-wide (benign)."""
    return json_text(
        {
            "Version": "2012-10-17",
            "Id": "key-org-share",
            "Statement": [
                default_key_policy(account),
                {
                    "Sid": "AllowUseWithinOrganization",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:PrincipalOrgID": org_id}},
                },
            ],
        }
    )


def external_key_policy(account: str, external_account: str) -> str:
    """Grants key use to an account outside the organization with no restricting condition."""
    return json_text(
        {
            "Version": "2012-10-17",
            "Id": "key-consolepolicy-3",
            "Statement": [
                default_key_policy(account),
                {
                    "Sid": "Allow use of the key",
                    "Effect": "Allow",
                    "Principal": {"AWS": _root(external_account)},
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:DescribeKey",
                    ],
                    "Resource": "*",
                },
            ],
        }
    )


def public_secret_policy() -> str:
    return json_text(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": "*",
                }
            ],
        }
    )


def aws_date_text(moment: dt.datetime) -> str:
    """The 'May 8, 2024, 8:12:33 AM' style AWS uses for dates inside responseElements."""
    hour = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return f"{moment:%b} {moment.day}, {moment.year}, {hour}:{moment:%M:%S} {half}"
