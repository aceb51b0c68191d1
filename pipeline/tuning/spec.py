"""The tuning file's shape (msgspec structs, unknown keys refused) and the rules a pattern must follow to be able
to match anything. Pure: `loader` reads the file and names the line of any error raised here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from pipeline.validation import KeyPath, SpecError, dotted

Severity = Literal["info", "low", "medium", "high", "critical"]
_SEVERITY_TEXT = "one of info, low, medium, high, critical"
Patterns = Annotated[
    str | list[str], Meta(description='text or a list of texts (quote account ids: account: "123456789012")')
]
GLOB_CHARS = frozenset("*?[")


class MatchSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    principal: Patterns | None = None
    resource: Patterns | None = None
    account: Patterns | None = None
    region: Patterns | None = None
    source_ip: Patterns | None = None


class ExceptionSpec(msgspec.Struct, forbid_unknown_fields=True):
    match: MatchSpec
    reason: Annotated[str, Meta(min_length=1, extra={"error": "{where} must say why (not empty)"})]
    owner: Annotated[str, Meta(min_length=1, extra={"error": "{where} must name a team or person (not empty)"})]
    expires: (
        Annotated[
            dt.date, Meta(description="a date, YYYY-MM-DD", extra={"error": "{where} must be a date, YYYY-MM-DD"})
        ]
        | None
    ) = None
    id: str | None = None
    detections: list[str] | None = None  # global exceptions only
    tags: list[str] | None = None  # global exceptions only


class DetectionSpec(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool | None = None
    severity: (
        Annotated[Severity, Meta(description=_SEVERITY_TEXT, extra={"error": "{where} must be " + _SEVERITY_TEXT})]
        | None
    ) = None
    params: dict[str, Any] = {}
    realert: Annotated[str | int, Meta(description="a duration such as 6h or 30m")] | None = None
    exceptions: list[ExceptionSpec] = []


class TuningSpec(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1] = 1
    exceptions: list[ExceptionSpec] = []
    # Each value is converted on its own (as a DetectionSpec): msgspec's error paths do not name mapping keys.
    detections: dict[str, Any] = {}


def patterns(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def is_glob(pattern: str) -> bool:
    return any(char in GLOB_CHARS for char in pattern)


_ACCOUNT = re.compile(r"[0-9*?\[\]!-]+")
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d")
_REGION_CHARS = re.compile(r"[a-z0-9*?\[\]!-]+")
_IP_CHARS = re.compile(r"[0-9a-fA-F.:*?\[\]!/-]+")
_ARN_ACCOUNT = re.compile(r"^arn:[^:]*:[^:]*:[^:]*:([^:]*):")


def check_pattern(field_name: str, pattern: str, path: KeyPath) -> None:
    """Refuse a pattern that can never match a finding's `field_name` (raises SpecError with advice)."""
    where = dotted(path)
    if not pattern.strip():
        raise SpecError(path, f"{where} is empty: remove it or give a pattern")
    if pattern.strip("*") == "":
        raise SpecError(path, f"{where} is {pattern!r}, which matches everything: leave the field out instead")
    if field_name == "account":
        if not _ACCOUNT.fullmatch(pattern):
            raise SpecError(path, f"{where}: {pattern!r} can never match a 12-digit account id")
        if not is_glob(pattern) and len(pattern) != 12:
            raise SpecError(
                path,
                f"{where}: {pattern!r} has {len(pattern)} digits, an account id has 12 (quote it to keep "
                "leading zeros)",
            )
    elif field_name == "region":
        if not (_REGION_CHARS.fullmatch(pattern) and (is_glob(pattern) or _REGION.fullmatch(pattern))):
            raise SpecError(path, f"{where}: {pattern!r} can never match an AWS region name such as us-east-1")
    elif field_name == "source_ip":
        if not _IP_CHARS.fullmatch(pattern):
            raise SpecError(path, f"{where}: {pattern!r} is not an IP address, a CIDR or a glob over one")
        if not is_glob(pattern):
            try:
                ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                raise SpecError(path, f"{where}: {pattern!r} is not an IP address or CIDR (e.g. 10.0.0.0/16)") from None
    elif field_name in ("principal", "resource"):
        if not (pattern.startswith("arn:") or pattern[0] in GLOB_CHARS):
            what = "role or user ARN" if field_name == "principal" else "key or secret ARN"
            raise SpecError(path, f"{where}: {pattern!r} can never match: findings name it by {what} (arn:aws:...)")
        account = _ARN_ACCOUNT.match(pattern)
        if account and account[1] and not is_glob(account[1]) and not re.fullmatch(r"\d{12}", account[1]):
            raise SpecError(path, f"{where}: the account part {account[1]!r} of {pattern!r} is not 12 digits")
