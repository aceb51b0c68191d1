"""Listing CloudTrail objects in S3 (moto server over HTTP) and in local folders."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from trails import BUCKET, ORG, day_of, log_key, put_all, s3_client, write_local

from pipeline import s3


def list_calls(client: Any) -> list[dict[str, Any]]:
    """Every ListObjectsV2 request the client makes from now on (its parameters)."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2", lambda params, **_: calls.append(dict(params))
    )
    return calls


def test_listing_paginates_past_1000_objects_and_flags_digests(aws: str) -> None:
    client = s3_client(aws)
    day = day_of(0)
    logs = [log_key(day, f"{i:05d}", prefix="trail") for i in range(1005)]
    digests = [log_key(day, f"{i:05d}", prefix="trail", kind="CloudTrail-Digest") for i in range(2)]
    put_all(client, logs + digests)
    calls = list_calls(client)
    found = s3.list_source(f"s3://{BUCKET}/trail", client)
    assert [obj.key for obj in found if not obj.skipped] == sorted(logs)
    assert sorted(obj.key for obj in found if obj.skipped) == sorted(digests)
    assert {obj.kind for obj in found if obj.skipped} == {s3.DIGEST_KIND}
    day_calls = [c for c in calls if c["Prefix"].endswith(f"{day:%Y/%m/%d}/") and "/CloudTrail/" in c["Prefix"]]
    assert len(day_calls) == 2 and "ContinuationToken" in day_calls[1]  # two pages
    first = found[0]
    assert first.source == f"s3://{BUCKET}/{first.key}" and first.bucket == BUCKET
    assert first.size == 2 and len(first.etag) == 32  # the MD5 ETag without its quotes


def test_organization_and_single_account_trails_are_discovered(aws: str) -> None:
    client = s3_client(aws)
    keys = [
        log_key(day_of(0), "a", account="111111111111", org=ORG, prefix="org"),
        log_key(day_of(1), "b", account="222222222222", org=ORG, region="eu-west-1", prefix="org"),
        log_key(day_of(0), "c", account="333333333333", prefix="org"),  # a single-account trail beside it
        "org/AWSLogs/not-an-account/CloudTrail/us-east-1/2024/05/01/x.json.gz",
        "org/README.txt",
    ]
    put_all(client, keys)
    days = s3.discover_partitions(f"s3://{BUCKET}/org", client)
    assert [(d.organization, d.account, d.region, d.day) for d in days] == [
        (None, "333333333333", "us-east-1", day_of(0)),  # in key order: digits sort before "o-"
        (ORG, "111111111111", "us-east-1", day_of(0)),
        (ORG, "222222222222", "eu-west-1", day_of(1)),
    ]
    assert days[1].prefixes == (f"org/AWSLogs/{ORG}/111111111111/CloudTrail/us-east-1/2024/05/01/",)
    only = s3.discover_partitions(f"s3://{BUCKET}", client, accounts=["222222222222"], regions=["eu-west-1"])
    assert [(d.account, d.region) for d in only] == [("222222222222", "eu-west-1")]  # found from the bucket top
    assert [obj.key for obj in s3.list_objects(only[0], client)] == [keys[1]]


def test_insight_and_digest_days_are_listed_with_their_log_day(aws: str) -> None:
    client = s3_client(aws)
    day = day_of(0)
    keys = [
        log_key(day, "log"),
        log_key(day, "dig", kind="CloudTrail-Digest"),
        log_key(day, "ins", kind="CloudTrail-Insight"),
    ]
    put_all(client, keys)
    (trail_day,) = s3.discover_partitions(f"s3://{BUCKET}", client)
    kinds = {obj.key.rsplit("_", 1)[-1]: obj.kind for obj in s3.list_objects(trail_day, client)}
    assert kinds == {
        "log.json.gz": "CloudTrail",
        "dig.json.gz": "CloudTrail-Digest",
        "ins.json.gz": "CloudTrail-Insight",
    }


def _period(prefix: str) -> tuple[dt.date, dt.date] | None:
    """The dates a .../<region>/YYYY/[MM/[DD/]] prefix covers; None for any other prefix."""
    match = re.search(r"/(\d{4})/(?:(\d{2})/(?:(\d{2})/)?)?$", prefix)
    if match is None:
        return None
    numbers = [int(group) for group in match.groups() if group]
    year, *rest = numbers
    if not rest:
        return dt.date(year, 1, 1), dt.date(year, 12, 31)
    month = rest[0]
    if len(rest) == 1:
        following = dt.date(year + month // 12, month % 12 + 1, 1)
        return dt.date(year, month, 1), following - dt.timedelta(days=1)
    day = dt.date(year, month, rest[1])
    return day, day


RANGES = pytest.mark.parametrize(
    ("since", "until"),
    [
        (dt.date(2024, 5, 1), dt.date(2024, 5, 2)),
        (dt.date(2024, 5, 1), None),
        (dt.date(2023, 6, 1), dt.date(2024, 4, 30)),
    ],
    ids=["short-range", "open-end", "long-range"],
)
RANGE_DAYS = [dt.date(2023, 12, 31), dt.date(2024, 4, 29), dt.date(2024, 4, 30), *(day_of(i) for i in range(5))]


@RANGES
def test_a_date_range_lists_only_its_day_prefixes(aws: str, since: dt.date, until: dt.date | None) -> None:
    client = s3_client(aws)
    days = RANGE_DAYS
    put_all(client, [log_key(day, f"{day:%Y%m%d}") for day in days])
    calls = list_calls(client)
    found = s3.list_source(f"s3://{BUCKET}", client, since=since, until=until)
    listed_days = sorted({dt.datetime.strptime(o.key[-16:-8], "%Y%m%d").date() for o in found})
    assert listed_days == [day for day in days if day >= since and (until is None or day <= until)]
    end = until or dt.date.max
    for call in calls:
        period = _period(call["Prefix"])
        if "Delimiter" not in call:  # object listings: whole days inside the range, nothing wider
            assert period is not None and period[0] == period[1] and since <= period[0] <= end, call
        elif period is not None:  # year/month/day folders are opened only where they overlap the range
            assert period[1] >= since and period[0] <= end, call
    if until is not None and (until - since).days < 31:  # a short range names its days: no year/month listing
        assert all(_period(c["Prefix"]) is None for c in calls if "Delimiter" in c)


@RANGES
def test_a_date_range_opens_only_its_folders_in_a_local_trail(
    tmp_path: Path, since: dt.date, until: dt.date | None
) -> None:
    for day in RANGE_DAYS:
        write_local(tmp_path, log_key(day, f"{day:%Y%m%d}"), b"{}")
    stats = s3.ListingStats()
    found = s3.list_source(str(tmp_path), since=since, until=until, stats=stats)
    listed_days = sorted({dt.datetime.strptime(o.key[-16:-8], "%Y%m%d").date() for o in found})
    assert listed_days == [day for day in RANGE_DAYS if day >= since and (until is None or day <= until)]
    assert stats.calls == len(stats.prefixes)
    end = until or dt.date.max
    periods = [period for period in map(_period, stats.prefixes) if period is not None]
    assert periods and all(low <= end and high >= since for low, high in periods), stats.prefixes
    if until is not None and (until - since).days < 31:  # a short range names its days: no year/month folder
        assert all(low == high for low, high in periods), stats.prefixes


def test_local_folder_lists_like_s3(aws: str, tmp_path: Path) -> None:
    client = s3_client(aws)
    keys = [
        log_key(day_of(0), "a", account="111111111111", org=ORG),
        log_key(day_of(1), "b", account="111111111111", org=ORG),
        log_key(day_of(1), "d", account="111111111111", org=ORG, kind="CloudTrail-Digest"),
        log_key(day_of(2), "c", account="222222222222", region="eu-west-1"),
    ]
    put_all(client, [f"mytrail/{key}" for key in keys])
    for key in keys:
        write_local(tmp_path / "corpus" / "mytrail", key, b"{}")
    remote = s3.list_source(f"s3://{BUCKET}", client, since=day_of(1))
    local = s3.list_source(str(tmp_path / "corpus"), since=day_of(1))
    assert [(o.key.removeprefix("mytrail/"), o.kind) for o in remote] == [(o.key, o.kind) for o in local]
    # local identity does not depend on which parent folder the run was pointed at
    assert {(o.bucket, o.key, o.etag) for o in local} == {
        (o.bucket, o.key, o.etag) for o in s3.list_source(str(tmp_path / "corpus" / "mytrail"), since=day_of(1))
    }
    assert local[0].bucket == str(tmp_path / "corpus" / "mytrail")


def test_bad_sources_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(s3.SourceError, match="names no bucket"):
        s3.parse_source("s3://")
    with pytest.raises(s3.SourceError, match="is not a folder"):
        s3.discover_partitions(str(tmp_path / "missing"))
    with pytest.raises(s3.SourceError, match="needs an S3 client"):
        s3.discover_partitions("s3://bucket/prefix")
    with pytest.raises(s3.SourceError, match="swap them"):
        s3.discover_partitions(str(tmp_path), since=day_of(2), until=day_of(1))


def test_local_listing_survives_hostile_entries(tmp_path: Path) -> None:
    """Dangling and looping symlinks, a FIFO, a name that is not UTF-8, a link out of the trail: all listed
    (ingest quarantines what it must not read); none stops the listing. Nothing outside the trail is stat'ed."""
    import os

    root = tmp_path / "trail"
    good = write_local(root, log_key(day_of(0), "good"), b"{}")
    folder = good.parent
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 1000)
    (folder / "dangling.json.gz").symlink_to(tmp_path / "nowhere")
    (folder / "loop.json.gz").symlink_to(folder / "loop.json.gz")
    (folder / "out.json.gz").symlink_to(outside)
    os.mkfifo(folder / "fifo.json.gz")
    with open(os.path.join(os.fsencode(folder), b"bad-\xff.json.gz"), "wb") as handle:
        handle.write(b"{}")
    found = {obj.key.rsplit("/", 1)[-1]: obj for obj in s3.list_source(str(root))}
    assert sorted(found) == sorted(
        ["bad-\\xff.json.gz", "dangling.json.gz", "fifo.json.gz", good.name, "loop.json.gz", "out.json.gz"]
    )
    assert found["out.json.gz"].size == len(str(outside))  # the link's own size, not its target's
    assert found[good.name].size == 2
    for obj in found.values():  # every string is valid UTF-8: the ledger, the lake and the report can hold it
        obj.source.encode()
        obj.key.encode()
