"""Split a log object's `Records` array into raw records without recursing (pure).

msgspec's decoders recurse once per nesting level, so one record nested a few thousand levels deep makes the
whole object undecodable (RecursionError), even into `msgspec.Raw` slices; and one string msgspec refuses (a
lone surrogate escape such as "\\ud800", which a Java-made log can hold) makes the whole object "malformed".
This scanner finds the boundaries of the array's elements with a flat loop over the JSON's strings and
brackets, so each record can then be decoded (or rejected) on its own and cannot take its neighbours down with
it. It is the fallback of `events.split_records` for those cases only: the regular path stays msgspec's.
"""

from __future__ import annotations

import re

from pipeline.ingest_failures import LogFormatError

# A complete JSON string (escapes included), a structural character, or a lone quote (an unterminated string).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]|"', re.DOTALL)
_RECORDS_KEY = b'"Records"'
_SPACE = b" \t\r\n"


def split_records_flat(data: bytes) -> list[bytes]:
    """The raw JSON of each element of the top-level object's `Records` array (the last one, as msgspec keeps
    the last of duplicate keys). The elements themselves are not validated: decoding each one does that.
    Raises LogFormatError when the object's structure is not `{..., "Records": [...], ...}`."""
    if not data.lstrip(_SPACE).startswith(b"{"):
        raise LogFormatError("not a CloudTrail log file: the top level is not an object")
    depth = 0
    last_string: bytes | None = None  # the latest string at depth 1: a key when a ':' follows
    key: bytes | None = None  # the key whose value comes next at depth 1
    records: list[bytes] | None = None
    current: list[bytes] | None = None  # the elements of the Records array being scanned
    start = 0
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token == b'"':
            raise LogFormatError("invalid JSON: an unterminated string")
        if token[0] == 0x22:  # a string
            if depth == 1:
                last_string = token
            continue
        if token == b":":
            if depth == 1:
                key = last_string
            continue
        if token == b",":
            if current is not None and depth == 2:
                current.append(_element(data, start, match.start()))
                start = match.end()
            continue
        if token in (b"[", b"{"):
            if depth == 1 and key == _RECORDS_KEY and token == b"[":
                current, start = [], match.end()
            elif depth == 1 and key == _RECORDS_KEY:
                raise LogFormatError("not a CloudTrail log file: Records is not an array")
            depth += 1
            continue
        depth -= 1  # ] or }
        if depth < 0:
            raise LogFormatError("invalid JSON: unbalanced brackets")
        if depth == 0:
            if data[match.end() :].strip(_SPACE):
                raise LogFormatError("invalid JSON: trailing characters after the top-level object")
            break
        if depth == 1 and current is not None:
            last = data[start : match.start()].strip(_SPACE)
            if last or current:
                current.append(_element(data, start, match.start()))
            records, current = current, None
        if depth == 1:
            key = None
    if depth != 0 or records is None:
        raise LogFormatError("not a CloudTrail log file: no complete Records array")
    return records


def _element(data: bytes, start: int, end: int) -> bytes:
    element = data[start:end].strip(_SPACE)
    if not element:
        raise LogFormatError("invalid JSON: an empty element in Records")
    return element
