"""Fuzzing ingest: hostile CloudTrail objects and records never blind the pipeline (property-based, hypothesis).

Each example builds a local-folder trail from real-shaped records (tests/trails.py, tests/fixtures/events if
present, a sample of the real-data corpus), mutated: field types, invalid UTF-8 and JSON escapes msgspec
refuses (lone surrogates), nesting depth, sizes, timestamps, hostile names and keys (markup, control
characters, 240-byte names, names that are not UTF-8), truncated and corrupt gzip, non-JSON, `Records` not a
list, a deep sibling of `Records`, re-delivered events, dangling symlinks and symlinks out of the trail. Every
record and object carries the outcome the failure model (pipeline/ingest_failures.py) promises for it, and
each example checks these invariants:

1. ingest never raises;
2. every good event is in the lake exactly once (re-deliveries are counted as duplicates);
3. every bad object is quarantined with a reason, in the report and in the ledger (status, reason), its bytes
   kept verbatim when they were read and never when they belong to a file outside the trail; every bad record
   is quarantined with a reason (a line under quarantine/records/), counted in the report and the ledger;
4. the report's counts (objects read/quarantined, events seen/kept/duplicate/rejected) are exactly the model's;
5. quarantine names fit the filesystem (<= 120 bytes) and stay inside quarantine/;
6. a rerun is a no-op: it reads 0 objects and leaves every file of the lake byte for byte as it was.

A second property runs `keytrail ingest` on such trails: it exits 0 or 3 (never 1), printing the hostile text.

Examples: 40 for the first property and 10 for the CLI one by default (5-20 s on 2 busy cores). More on demand:
`HYPOTHESIS_PROFILE=long uv run pytest tests/test_ingest_fuzz.py -p no:logging` (1,000 and 250 examples, ~6
min); add `--hypothesis-show-statistics` to see what the examples covered.
Some eventTime shapes (offsets, years 1 and 9999, nanoseconds) may be kept or rejected as bad records by the
eventTime rules: the model accepts either, as long as each such record is accounted for exactly once.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn
from trails import day_of, lake_table, log_key, record
from typer.testing import CliRunner

from pipeline import events, ingest
from pipeline import lake as lakelib
from pipeline.cli import app

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,  # a failure prints its reproduce blob (print_blob): nothing is written into the repo
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("keytrail", max_examples=40, **_COMMON)
settings.register_profile("long", max_examples=1000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "keytrail"))

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
WANTED = events.DEFAULT_SOURCES  # what ingest keeps by default (KMS, Secrets Manager, CloudTrail's own events)
TESTS = Path(__file__).resolve().parent
CORPUS = TESTS.parents[1] / "shared" / "realdata" / "corpus"
MARK = "FZ-RAW-MARK"  # a string value replaced by raw bytes in the serialized record
SECRET = b"-----BEGIN FUZZ SECRET----- must never be copied into the lake"


def _base_records() -> list[dict[str, Any]]:
    """Real-shaped records of KMS, Secrets Manager and other services."""
    bases = [record("b", "2024-05-01T00:00:00Z", name) for name in ("Decrypt", "GetSecretValue", "RunInstances")]
    bases += [json.loads(path.read_text()) for path in sorted((TESTS / "fixtures" / "events").glob("*.json"))]
    per_source: Counter[str] = Counter()
    for path in sorted(CORPUS.rglob("*.json.gz")) if CORPUS.is_dir() else []:
        for item in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
            source = item.get("eventSource", "")
            if per_source[source] < 8:  # a sample of every service: wanted or not
                per_source[source] += 1
                bases.append(item)
    return bases


BASES = _base_records()
# Three records in four are of a service keytrail keeps: those are the ones whose outcome matters most.
base_records = st.sampled_from([b for b in BASES if b.get("eventSource") in WANTED]) | st.sampled_from(BASES)

# --- records: one mutation each, with the outcome it must have ---------------------------------------------
# KEPT: stays a good record. REJECTED: a bad record if its service is kept (ignored otherwise, like any record
# of another service). ALWAYS: a bad record whatever its service (its eventSource cannot be read). EITHER: kept
# or rejected (see the module docstring).
KEPT, REJECTED, ALWAYS, EITHER = "kept", "rejected", "always", "either"

HOSTILE = [
    "[/bold]",
    "[red]x[/red]",
    ":secret:",
    "\x1b[2J\x1b]0;pwned\x07",
    "\u202eevil",
    "a\nb\r\n",
    "\x00",
    "..",
    "\\",
]
hostile_text = st.sampled_from(HOSTILE) | st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
INVALID_UTF8 = [
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xf4\x90\x80\x80",
]
REFUSED_ESCAPES = [b'"\\ud800"', b'"x\\udc00y"', b'"\\ude00\\ud83d"', b'"\\q"', b'"tab\there"', b'"nl\nhere"']
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | hostile_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)
GOOD_TIMES = st.builds(
    lambda day, seconds, fraction: (
        f"{day_of(day)}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" + fraction + "Z"
    ),
    st.integers(0, 2),
    st.integers(0, 86_399),
    st.sampled_from(["", ".0", ".123", ".999999"]),
)
BAD_TIMES = ["", "yesterday", "[/bold]", "2024-13-45T99:99:99Z", "2024-05-01", "2024-02-30T00:00:00Z", "T" * 25]
ODD_TIMES = [  # valid or not depending on the eventTime rules
    "2024-05-01T01:00:00+02:00",
    "2024-05-01T01:00:00-00:30",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2024-05-01T01:00:00.123456789Z",
    "2024-05-01 01:00:00Z",
    "2024-05-01t01:00:00z",
    "２０２４-05-01T00:00:00Z",
]


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"n": value}
    return value


def _set(item: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for name in parents:
        if not isinstance(item.get(name), dict):
            item[name] = {}
        item = item[name]
    item[last] = value


def _drop(item: dict[str, Any], path: str) -> None:
    item.pop(path, None)


@dataclass
class Mutation:
    outcome: str
    apply: Callable[[DrawFn, dict[str, Any]], bytes | None]  # None: serialize the mutated record as it is


def _at(path: str, values: st.SearchStrategy[Any], outcome: str) -> Mutation:
    return Mutation(outcome, lambda draw, item: _set(item, path, draw(values)))


def _raw_at(path: str, raws: st.SearchStrategy[bytes], outcome: str) -> Mutation:
    def apply(draw: DrawFn, item: dict[str, Any]) -> bytes:
        _set(item, path, MARK)
        return json.dumps(item).encode().replace(f'"{MARK}"'.encode(), draw(raws))

    return Mutation(outcome, apply)


def _replace(values: st.SearchStrategy[Any], outcome: str) -> Mutation:
    return Mutation(outcome, lambda draw, item: json.dumps(draw(values)).encode())


invalid_utf8 = st.builds(
    lambda bad, text: b'"' + text.encode() + bad + b'"', st.sampled_from(INVALID_UTF8), st.text("ab", max_size=3)
)
STORED_TEXT = ["userAgent", "sourceIPAddress", "errorMessage", "eventName", "userIdentity.userName", "userIdentity.arn"]
GOOD_MUTATIONS = [
    Mutation(KEPT, lambda draw, item: None),
    *(_at(path, hostile_text, KEPT) for path in STORED_TEXT),
    _at("requestParameters.keyId", hostile_text | json_values, KEPT),
    _at("requestParameters.secretId", hostile_text | json_values, KEPT),
    _at("requestParameters.encryptionContext", st.dictionaries(hostile_text, json_values, max_size=4), KEPT),
    _at("requestParameters.secretIdList", st.lists(json_values, max_size=4), KEPT),
    _at("userAgent", st.integers(10_000, 100_000).map(lambda n: "A" * n), KEPT),  # big
    _at("requestParameters", json_values, KEPT),
    _at("resources", json_values, KEPT),
    _at("responseElements", json_values, KEPT),
    _at("additionalEventData", json_values, KEPT),
    _at("fuzzUnknownField", json_values, KEPT),
    _at("readOnly", st.sampled_from(["maybe", "TRUE", "false", None]), KEPT),
    _at("requestParameters.fuzz", st.integers(20, 200).map(_nested), KEPT),  # nested, not too deep
    _at("eventTime", GOOD_TIMES, KEPT),
    _raw_at("userAgent", st.sampled_from([b'"\\ud83d\\ude00"', b'"nul\\u0000"', b'"\\u202e"']), KEPT),
    _raw_at("fuzzUnknownField", invalid_utf8, KEPT),  # never decoded, never stored
]
BAD_MUTATIONS = [
    _at(
        "eventTime",
        st.sampled_from(BAD_TIMES) | st.integers() | st.none() | st.lists(st.integers(), max_size=2),
        REJECTED,
    ),
    _at("eventID", st.none() | st.integers() | st.lists(st.integers(), max_size=1), REJECTED),
    _at("eventName", st.none() | st.integers(), REJECTED),
    _at("userIdentity", st.text(max_size=5) | st.integers() | st.lists(st.integers(), max_size=2), REJECTED),
    _at("awsRegion", st.integers() | st.lists(st.none(), max_size=1) | st.just({}), REJECTED),
    _at("readOnly", st.integers() | st.just([]), REJECTED),
    _at("userIdentity.sessionContext.attributes.mfaAuthenticated", st.integers() | st.just({}), REJECTED),
    Mutation(REJECTED, lambda draw, item: _drop(item, draw(st.sampled_from(["eventTime", "eventID", "eventName"])))),
    _raw_at("userAgent", invalid_utf8, REJECTED),
    _raw_at("requestParameters.fuzz", invalid_utf8, REJECTED),
    _raw_at("eventSource", invalid_utf8, ALWAYS),
    _at("eventSource", st.integers() | st.none() | st.just(["kms.amazonaws.com"]), ALWAYS),
    Mutation(ALWAYS, lambda draw, item: _drop(item, "eventSource")),
    _raw_at("userAgent", st.sampled_from(REFUSED_ESCAPES), ALWAYS),
    _raw_at("fuzzUnknownField", st.sampled_from(REFUSED_ESCAPES), ALWAYS),
    _raw_at("requestParameters.fuzz", st.integers(3000, 6000).map(lambda n: b'{"n": ' * n + b"1" + b"}" * n), ALWAYS),
    _replace(st.integers() | st.text(max_size=5) | st.none() | st.lists(st.integers(), max_size=2), ALWAYS),
    _at("eventTime", st.sampled_from(ODD_TIMES), EITHER),
]


ID_SUFFIXES = ["", "-[/bold]", "-:secret:", "-é\u202e", "-" + "x" * 300]


@dataclass
class RecordCase:
    text: bytes
    event_id: str
    outcome: str  # kept | rejected | ignored | either


@st.composite
def record_cases(draw: DrawFn, prefix: str) -> RecordCase:
    item = copy.deepcopy(draw(base_records))
    event_id = prefix + draw(st.sampled_from(ID_SUFFIXES))  # unique: the prefix names object and position
    item["eventID"], item["eventTime"] = event_id, draw(GOOD_TIMES)
    wanted = item.get("eventSource") in WANTED
    mutation = draw(st.sampled_from(GOOD_MUTATIONS) | st.sampled_from(BAD_MUTATIONS))
    text = mutation.apply(draw, item)
    text = text if text is not None else json.dumps(item).encode()
    if mutation.outcome == ALWAYS:
        outcome = "rejected"
    elif not wanted:
        outcome = "ignored"
    else:
        outcome = mutation.outcome
    return RecordCase(text, event_id, outcome)


# --- objects ---------------------------------------------------------------------------------------------------

GOOD_CONTAINERS = ["gzip", "gzip", "gzip", "plain", "deep-sibling"]
BAD_CONTAINERS = ["truncated", "crc", "not-json", "records-not-list", "no-records", "top-array", "empty", "cut-json"]
LINKS = ["dangling", "outside"]


@dataclass
class ObjectCase:
    name: str | bytes  # bytes: a file name that is not UTF-8
    day: int
    container: str
    records: list[RecordCase] = field(default_factory=list)
    data: bytes = b""

    @property
    def readable(self) -> bool:
        return self.container in GOOD_CONTAINERS and not isinstance(self.name, bytes)


def _log(records: list[RecordCase], sibling: bytes = b"") -> bytes:
    return b'{"Records": [' + b", ".join(r.text for r in records) + b"]" + sibling + b"}"


@st.composite
def object_cases(draw: DrawFn, index: int) -> ObjectCase:
    container = draw(st.sampled_from(GOOD_CONTAINERS * 3 + BAD_CONTAINERS + LINKS))
    name_part = draw(
        st.sampled_from(["", "[/bold]", ":secret: ", "\x1b[2J", "\u202e", "..", "a\nb", "é" * 100, "z" * 220])
        | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), max_size=30)
    )
    suffix = ".json" if container == "plain" else ".json.gz"
    name: str | bytes = f"{index:02d}{name_part}"[: 240 - len(suffix)] + suffix
    if len(name.encode()) > 250:  # NAME_MAX is in bytes
        name = f"{index:02d}-long{suffix}"
    if draw(st.integers(0, 29)) == 0:
        name = f"{index:02d}-bad-\udcff-name{suffix}".encode("utf-8", "surrogateescape")
    case = ObjectCase(name, draw(st.integers(0, 1)), container)
    case.records = [draw(record_cases(f"fz{index}-{position}")) for position in range(draw(st.integers(0, 6)))]
    body = _log(case.records, b', "fuzzDeep": ' + b"[" * 5000 + b"]" * 5000 if container == "deep-sibling" else b"")
    packed = gzip.compress(body, mtime=0)
    case.data = {
        "gzip": packed,
        "deep-sibling": packed,
        "plain": body,
        "truncated": packed[: draw(st.integers(0, len(packed) - 1))],
        "crc": packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:],
        "not-json": gzip.compress(b"<html>" + draw(st.binary(max_size=50))),
        "records-not-list": gzip.compress(
            b'{"Records": '
            + json.dumps(draw(scalars | st.dictionaries(hostile_text, json_values, max_size=3))).encode()
            + b"}"
        ),
        "no-records": gzip.compress(b'{"records": [' + b", ".join(r.text for r in case.records) + b"]}"),
        "top-array": gzip.compress(b"[" + b", ".join(r.text for r in case.records) + b"]"),
        "empty": b"",
        "cut-json": gzip.compress(body[: draw(st.integers(0, len(body) - 1))]),
    }.get(container, b"")
    return case


@st.composite
def trails(draw: DrawFn) -> list[ObjectCase]:
    objects = [draw(object_cases(index)) for index in range(draw(st.integers(1, 6)))]
    kept = [r for o in objects if o.readable for r in o.records if r.outcome == "kept"]
    if kept and draw(st.booleans()):  # a re-delivery: the same event again in a later, good object
        objects.append(ObjectCase(f"{len(objects):02d}-redelivered.json.gz", 1, "gzip", [draw(st.sampled_from(kept))]))
        objects[-1].data = gzip.compress(_log(objects[-1].records), mtime=0)
    return objects


# --- building the trail and checking the invariants ------------------------------------------------------------


def _write(root: Path, outside: Path, objects: list[ObjectCase]) -> dict[int, str]:
    """Write the trail; returns each object's key as the listing reports it."""
    keys = {}
    for index, case in enumerate(objects):
        folder = (root / log_key(day_of(case.day), "x")).parent
        folder.mkdir(parents=True, exist_ok=True)
        path = os.path.join(os.fsencode(folder), case.name if isinstance(case.name, bytes) else os.fsencode(case.name))
        os.makedirs(os.path.dirname(path), exist_ok=True)  # a '/' in the name ("[/bold]") makes a subfolder
        if case.container == "dangling":
            os.symlink(os.fsencode(root / f"missing-{index}"), path)
        elif case.container == "outside":
            os.symlink(os.fsencode(outside), path)
        else:
            with open(path, "wb") as handle:
                handle.write(case.data)
        keys[index] = os.path.relpath(path, os.fsencode(root)).decode("utf-8", "backslashreplace")
    return keys


def _files(lake: Path) -> dict[str, bytes]:
    return {path.relative_to(lake).as_posix(): path.read_bytes() for path in lake.rglob("*") if path.is_file()}


def check_ingest(objects: list[ObjectCase], workdir: Path) -> None:
    root, lake, outside = workdir / "trail", workdir / "lake", workdir / "secret.bin"
    outside.write_bytes(SECRET)
    keys = _write(root, outside, objects)
    readable = [o for o in objects if o.readable]
    records = [r for o in readable for r in o.records]
    must_keep = {r.event_id for r in records if r.outcome == "kept"}
    either = {r.event_id for r in records if r.outcome == "either"}
    duplicates = sum(1 for r in records if r.outcome == "kept") - len(must_keep)
    for case in objects:  # what the examples covered: --hypothesis-show-statistics
        event(f"object: {'non-UTF-8 name' if isinstance(case.name, bytes) else case.container}")
    for outcome in sorted({r.outcome for r in records}):
        event(f"records {outcome}")

    report = ingest.ingest(str(root), lake, now=NOW, workers=1)  # 1. never raises

    ids = Counter(lake_table(lake).column("event_id").to_pylist())
    assert all(count == 1 for count in ids.values()), ids  # 2. exactly once
    assert must_keep <= set(ids) <= must_keep | either
    rejected = sum(1 for r in records if r.outcome == "rejected") + len(either - set(ids))
    counts = (report.objects_listed, report.objects_read, report.objects_quarantined, report.events_seen)
    assert counts == (len(objects), len(readable), len(objects) - len(readable), len(records))  # 4.
    assert (report.events_kept, report.events_duplicate, report.events_rejected) == (len(ids), duplicates, rejected)

    reasons = {}  # 3. bad objects: reason file (key, reason), ledger entry, verbatim bytes when read
    for path in (lakelib.quarantine_dir(lake) / "objects").glob("*.reason.json"):
        reason = json.loads(path.read_text())
        reasons[reason["key"]] = (reason, path.with_name(path.name.removesuffix(".reason.json")))
    ledger = {entry.key: entry for batch in lakelib.read_ledger(lake) for entry in batch.objects}
    assert len(ledger) == len(objects)
    for index, case in enumerate(objects):
        entry = ledger[keys[index]]
        if case.readable:
            assert not entry.quarantined and keys[index] not in reasons
            continue
        reason, kept = reasons[keys[index]]
        assert entry.quarantined and entry.reason and reason["reason"] == entry.reason
        if case.container in BAD_CONTAINERS and not isinstance(case.name, bytes):
            assert kept.read_bytes() == case.data
        else:
            assert not kept.exists()  # never read: nothing to keep but the reason
    lines = [
        json.loads(line)
        for path in (lakelib.quarantine_dir(lake) / "records").glob("*.jsonl")
        for line in path.read_text().split("\n")[:-1]  # JSON lines: U+2028 or U+0085 inside are not breaks
    ]
    assert len(lines) == rejected and all(line["reason"] and line["key"] in ledger for line in lines)
    assert sum(entry.events_rejected for entry in ledger.values()) == rejected
    before = _files(lake)
    assert not any(SECRET in data for data in before.values())
    for relative in before:  # 5.
        assert relative.startswith(
            ("events/", "rollups/hourly-v2/", "_ledger/", "quarantine/objects/", "quarantine/records/")
        )
        # rollups/hourly-v2/event_date=D/<batch>.parquet and _ledger/ids/event_date=D/<batch>.parquet
        depth = 3 if relative.startswith(("rollups/", "_ledger/ids/")) else 2
        assert relative.count("/") <= depth and len(relative.rsplit("/", 1)[-1].encode()) <= 120

    again = ingest.ingest(str(root), lake, now=NOW, workers=1)  # 6. a no-op
    assert (again.objects_read, again.objects_quarantined, again.objects_skipped) == (0, 0, len(objects))
    assert _files(lake) == before


@PROFILE
@given(trails())
def test_hostile_trails_never_blind_ingest(objects: list[ObjectCase]) -> None:
    with tempfile.TemporaryDirectory(prefix="keytrail-fuzz-") as workdir:
        check_ingest(objects, Path(workdir))


@settings(PROFILE, max_examples=max(4, PROFILE.max_examples // 4))
@given(trails())
def test_the_cli_reports_hostile_trails_and_exits_0_or_3(objects: list[ObjectCase]) -> None:
    with tempfile.TemporaryDirectory(prefix="keytrail-fuzz-") as workdir:
        root, lake = Path(workdir) / "trail", Path(workdir) / "lake"
        _write(root, Path(workdir) / "secret.bin", objects)
        args = ["ingest", str(root), "--lake", str(lake), "--workers", "1"]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        report = lakelib.read_ledger(lake)
        bad = any(entry.quarantined or entry.events_rejected for batch in report for entry in batch.objects)
        assert result.exit_code == (3 if bad else 0), result.output
        assert "objects listed" in result.output and "\x1b" not in result.output
        rerun = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert rerun.exit_code == 0 and "objects quarantined" in rerun.output
