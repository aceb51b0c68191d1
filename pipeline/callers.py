"""Who the caller is, and its name on screen: the Python twin of the `caller_arn` SQL macro (pipeline/engine.py).

A workload role is named by its role ARN (its session names change every run, so they would split one caller
into many); a person signed in through IAM Identity Center by the session ARN (one permission-set role is
shared by many people; the session name is the person). Queries name the caller only through the macro (and
`actor`, built on it); `display_name` is the one short form of any ARN the CLI, the demo and SNS Subjects
print, so `keytrail detect` and `keytrail alerts list` name the same alert the same way.
"""

from __future__ import annotations

import re

# Identity Center permission-set roles live under this path and are named AWSReservedSSO_<set>_<suffix>.
IDENTITY_CENTER_ROLE_PATH = ":role/aws-reserved/sso.amazonaws.com/"
IDENTITY_CENTER_ROLE_PREFIX = "AWSReservedSSO_"
_SECRET_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")  # Secrets Manager appends 6 random characters to a name


def caller_arn(principal_arn: str | None, session_issuer_arn: str | None) -> str | None:
    """The caller of an event, exactly as the `caller_arn(principal_arn, session_issuer_arn)` macro says."""
    if session_issuer_arn is not None and IDENTITY_CENTER_ROLE_PATH in session_issuer_arn:
        return principal_arn
    return session_issuer_arn if session_issuer_arn is not None else principal_arn


def display_name(arn: str | None) -> str | None:
    """A readable name from an ARN: the caller's role or user name (an Identity Center session: the person),
    a secret's name, `key/1234abcd` for a key id, `root@<account>`; other text is returned as it is."""
    if not arn:
        return None
    if not arn.startswith("arn:"):
        return arn  # service principals ("kms.amazonaws.com") and bare ids are already short
    parts = arn.split(":", 6)
    if len(parts) < 6:
        return arn
    service, account, resource = parts[2], parts[4], ":".join(parts[5:])
    if resource == "root":
        return f"root@{account}"
    if service == "secretsmanager" and resource.startswith("secret:"):
        return _SECRET_SUFFIX.sub("", resource.removeprefix("secret:"))
    kind, _, rest = resource.partition("/")
    if not rest:
        return resource
    if service == "kms" and kind == "key":
        return f"key/{rest[:8]}"
    if service == "sts" and kind == "assumed-role":
        role, _, session = rest.partition("/")
        # the caller_arn rule on a session ARN alone: the person for Identity Center, else the role
        if role.startswith(IDENTITY_CENTER_ROLE_PREFIX) and session:
            return session
        return role
    return rest.rsplit("/", 1)[-1]
