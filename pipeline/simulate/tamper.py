"""Tamper with a simulated, signed trail the ways an attacker would, so `keytrail verify` can be shown to catch
each: modify a log file, delete one, delete two consecutive digests, append bytes after a log's gzip member, and
forge a digest (re-signed with another key). Each tampering hits its own hour of one account/region/day, and
says which objects it touched and what verification must call them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.integrity.digest_file import parse_digest, sha256_hex
from pipeline.simulate.digests import compress, digest_body, fingerprint, sign, signing_key

TAMPERINGS = ("modify-log", "delete-log", "delete-digests", "append-gzip", "forge-digest")


@dataclass(frozen=True)
class Tampering:
    """What one tampering did: its name, the objects it touched (keys) and the status verify must give them."""

    name: str
    objects: tuple[str, ...]
    expect: str  # a results status
    kind: str  # digest | log


class _Objects:
    """Read, write and delete a trail's objects in a folder or (client given) an S3 bucket."""

    def __init__(self, out: str, client: Any | None) -> None:
        self.bucket, _, prefix = out[len("s3://") :].partition("/") if out.startswith("s3://") else ("", "", "")
        self.root = None if out.startswith("s3://") else Path(out)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client

    def keys(self, prefix: str) -> list[str]:
        if self.root is not None:
            folder = self.root / prefix
            return sorted(str(p.relative_to(self.root)) for p in folder.rglob("*") if p.is_file())
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return sorted(item["Key"][len(self.prefix) :] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        if self.root is not None:
            (self.root / key).write_bytes(data)
        else:
            extra = {"Metadata": metadata} if metadata else {}
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, **extra)

    def delete(self, key: str) -> None:
        if self.root is not None:
            (self.root / key).unlink()
        else:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


def _digests_of_day(
    objects: _Objects, account_root: str, region: str, day: dt.date
) -> list[tuple[str, dict[str, Any]]]:
    folder = f"{account_root}CloudTrail-Digest/{region}/{day:%Y/%m/%d}/"
    return [
        (key, json.loads(gzip.decompress(objects.read(key))))
        for key in objects.keys(folder)
        if key.endswith(".json.gz")
    ]


def tamper(
    out: str,
    names: Sequence[str],
    *,
    seed: int,
    account_root: str,
    region: str,
    day: dt.date,
    s3_client: Any | None = None,
) -> list[Tampering]:
    """Apply the `names` tamperings (from TAMPERINGS) to one account/region/day of the trail at `out`.

    `account_root` is `AWSLogs/[<org>/]<account>/` (below the trail prefix). The day must not be the trail's
    last (its newest digest must stay intact, so forged and deleted ones are judged by their successors).
    """
    unknown = sorted(set(names) - set(TAMPERINGS))
    if unknown:
        raise ValueError(f"unknown tampering {', '.join(unknown)}: choose from {', '.join(TAMPERINGS)}")
    objects = _Objects(out, s3_client)
    digests = _digests_of_day(objects, account_root, region, day)
    # Hours whose digest lists logs, each used by one tampering; delete-digests takes two in a row.
    busy = [index for index, (_, d) in enumerate(digests) if len(d["logFiles"]) >= 2]
    done: list[Tampering] = []
    for name in TAMPERINGS:
        if name not in names:
            continue
        index = _take(busy, pair=name == "delete-digests")
        done.append(_ACTIONS[name](objects, digests, index, seed))
    return done


def _take(busy: list[int], pair: bool) -> int:
    for position, index in enumerate(busy):
        if not pair or (position + 1 < len(busy) and busy[position + 1] == index + 1):
            del busy[position : position + (2 if pair else 1)]
            return index
    raise ValueError("the day has too few busy hours to tamper with: simulate more events per day")


def _first_log(digests: list[tuple[str, dict[str, Any]]], index: int) -> str:
    return digests[index][1]["logFiles"][0]["s3Object"]


def _modify_log(objects: _Objects, digests: list[tuple[str, dict[str, Any]]], index: int, _seed: int) -> Tampering:
    key = _first_log(digests, index)
    content = gzip.decompress(objects.read(key))
    changed = content.replace(b'"readOnly":true', b'"readOnly":false', 1)
    if changed == content:
        changed = content.replace(b'"readOnly":false', b'"readOnly":true', 1)
    objects.write(key, compress(changed))
    return Tampering("modify-log", (key,), "modified", "log")


def _delete_log(objects: _Objects, digests: list[tuple[str, dict[str, Any]]], index: int, _seed: int) -> Tampering:
    key = _first_log(digests, index)
    objects.delete(key)
    return Tampering("delete-log", (key,), "missing", "log")


def _append_gzip(objects: _Objects, digests: list[tuple[str, dict[str, Any]]], index: int, _seed: int) -> Tampering:
    key = _first_log(digests, index)
    objects.write(key, objects.read(key) + compress(b'{"Records":[]}'))
    return Tampering("append-gzip", (key,), "modified", "log")


def _delete_digests(objects: _Objects, digests: list[tuple[str, dict[str, Any]]], index: int, _seed: int) -> Tampering:
    keys = (digests[index][0], digests[index + 1][0])
    for key in keys:
        objects.delete(key)
    return Tampering("delete-digests", keys, "missing", "digest")


def _forge_digest(objects: _Objects, digests: list[tuple[str, dict[str, Any]]], index: int, seed: int) -> Tampering:
    """Hide a log file from its digest and re-sign the digest with a key that is not CloudTrail's."""
    key, fields = digests[index]
    forger = signing_key(seed, "forger")
    forged = dict(fields, logFiles=fields["logFiles"][1:], digestPublicKeyFingerprint=fingerprint(forger))
    body = digest_body(forged)
    signature = sign(forger, parse_digest(body), sha256_hex(body))
    objects.write(key, compress(body), {"signature": signature, "signature-algorithm": "SHA256withRSA"})
    return Tampering("forge-digest", (key,), "modified", "digest")


_ACTIONS: dict[str, Callable[[_Objects, list[tuple[str, dict[str, Any]]], int, int], Tampering]] = {
    "modify-log": _modify_log,
    "delete-log": _delete_log,
    "delete-digests": _delete_digests,
    "append-gzip": _append_gzip,
    "forge-digest": _forge_digest,
}


def tamper_simulation(out: str, result: Any, names: Sequence[str], s3_client: Any | None = None) -> list[Tampering]:
    """Tamper with a trail `simulate()` just wrote (its SimulationResult): the first account and region, on the
    day before the last (the last day's digests close the chain, so each tampering is judged by a successor)."""
    if result.days < 2:
        raise ValueError("tampering needs at least 2 simulated days (the last one closes the digest chain)")
    org = f"{result.org_id}/" if result.org_id else ""
    root = f"AWSLogs/{org}{result.accounts[0]}/"
    day = result.start + dt.timedelta(days=result.days - 2)
    return tamper(out, names, seed=result.seed, account_root=root, region=result.regions[0], day=day,
                  s3_client=s3_client)  # fmt: skip
