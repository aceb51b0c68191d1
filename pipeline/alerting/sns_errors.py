"""What SNS's errors mean for keytrail (pure): whose fault a failure is, and what a person should do about it.

* SNS's own trouble (throttling, 5xx): worth another try, with backoff; the alerts stay pending.
* The topic's, its key's or the credentials' fault (missing topic, denied, KMS disabled): every message would
  fail alike, so no alert is blamed; publishing stops with a hint.
* One message's fault (a sender fault such as InvalidParameter): counts against that alert only.
"""

from __future__ import annotations

import re

from botocore import exceptions as botocore_errors
from botocore.exceptions import ClientError

# Error codes worth another try; any HTTP 5xx is retried too.
RETRYABLE = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSThrottling",
        "KMSThrottlingException",
        "InternalError",
        "InternalErrorException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)
HINTS = {
    "NotFound": "topic {topic} does not exist: create it, or pass the right --topic-arn / KEYTRAIL_TOPIC_ARN",
    "AuthorizationError": "the credentials in use may not publish to {topic}: allow sns:Publish on it (and "
    "kms:GenerateDataKey + kms:Decrypt on its key if the topic is encrypted)",
    "InvalidClientTokenId": "the AWS credentials are not valid here: check the profile/keys, and the region",
}
HINTS |= {
    "NotFoundException": HINTS["NotFound"],
    "AuthorizationErrorException": HINTS["AuthorizationError"],
    "AccessDenied": HINTS["AuthorizationError"],
    "AccessDeniedException": HINTS["AuthorizationError"],
    "KMSAccessDenied": HINTS["AuthorizationError"],
    "ExpiredToken": HINTS["InvalidClientTokenId"],
    "UnrecognizedClientException": HINTS["InvalidClientTokenId"],
}
# Faults of the topic, its key or the credentials: every message would fail alike, so no alert is blamed.
TOPIC_FAULTS = frozenset(HINTS) | {
    "EndpointDisabled",
    "InvalidSecurity",
    "PlatformApplicationDisabled",
    "KMSDisabled",
    "KMSInvalidState",
    "KMSNotFound",
    "KMSOptInRequired",
}
# Whole-call refusals that may be about one entry: the batch is split to find it. A message naming the
# TopicArn is about the topic instead.
MESSAGE_FAULTS = frozenset({"InvalidParameter", "InvalidParameterValue", "ValidationError", "BatchRequestTooLong"})
_TOO_LONG = re.compile(r"too (long|large|big)", re.IGNORECASE)


def error_text(err: Exception) -> tuple[str, str]:
    """(code, message) of an AWS error, or (exception type, text) of any other."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return str(error.get("Code", "Unknown")), str(error.get("Message", err))
    return type(err).__name__, str(err)


def retryable(err: Exception) -> bool:
    """Throttling or a server error: worth another try."""
    # Connection errors are not retried here: the client (pipeline.aws) already retried them, and more rounds
    # would only delay the error for an endpoint that is down or mistyped.
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_text(err)[0] in RETRYABLE or status >= 500
    return False


def refuses_a_message(err: Exception) -> bool:
    """A whole-call refusal that may be about one entry of the batch rather than the topic or the request."""
    if not isinstance(err, ClientError) or retryable(err):
        return False
    code, message = error_text(err)
    return code in MESSAGE_FAULTS and "topicarn" not in message.lower()


def topic_fault(code: str) -> bool:
    """An entry's sender-fault code that is about the topic, its key or the credentials, not the message."""
    return code in TOPIC_FAULTS


def refused_for_good(error: str) -> bool:
    """A refusal no retry of the same message can change: SNS found it too long (keytrail already trimmed it)."""
    return bool(_TOO_LONG.search(error))


def hint(err: Exception, *, topic: str, attempts: int) -> str:
    """What to do after `err` stopped publishing to `topic` (after `attempts` tries)."""
    code = error_text(err)[0]
    if code in HINTS:
        return HINTS[code].format(topic=topic)
    if isinstance(err, botocore_errors.ConnectionError | botocore_errors.HTTPClientError):
        return "cannot reach SNS: check --endpoint-url / KEYTRAIL_ENDPOINT_URL, the region and the network"
    if retryable(err):
        return f"SNS kept failing after {attempts} attempts: run `keytrail alerts publish` again later"
    return "fix the request or the topic, then run `keytrail alerts publish` again"
