"""Find and read a tuning file, validating it strictly against the detection catalog: unknown keys, unknown
detection ids, tags and params, bad types and patterns that can never match are one error naming the file and
line and what to do (`keytrail.yaml:14: detections.kms_decrypt_volume_spike.params.min_events: expected an int`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline import catalog, validation
from pipeline.catalog import Query
from pipeline.settings import Settings
from pipeline.times import parse_duration
from pipeline.tuning import spec
from pipeline.tuning.model import EMPTY, MATCH_FIELDS, DetectionTuning, Match, Tuning, TuningException
from pipeline.tuning.tags import detection_tags
from pipeline.validation import KeyPath, SpecError

DEFAULT_FILE = Path("keytrail.yaml")


class TuningError(ValueError):
    """The tuning file is invalid or missing; the message names the file and line and says what to do."""


def locate(explicit: Path | None, settings: Settings, cwd: Path | None = None) -> Path | None:
    """The tuning file a run uses: `--tuning PATH`, else KEYTRAIL_TUNING, else `keytrail.yaml` in the working
    directory when there is one, else none. A file named explicitly must exist."""
    named = explicit or settings.tuning
    if named is not None:
        if not Path(named).is_file():
            source = "--tuning" if explicit else "KEYTRAIL_TUNING"
            raise TuningError(f"{named}: tuning file not found ({source}): fix the path or create the file")
        return Path(named)
    default = (cwd or Path.cwd()) / DEFAULT_FILE
    return default if default.is_file() else None


def load_for_run(explicit: Path | None, settings: Settings, detections: Sequence[Query]) -> Tuning:
    """The located tuning file, loaded against `detections` (the empty tuning when there is none)."""
    path = locate(explicit, settings)
    return load(path, detections) if path is not None else EMPTY


def load(path: Path, detections: Sequence[Query]) -> Tuning:
    """Read and validate the tuning file at `path` against the detection catalog `detections`."""
    try:
        data, document = catalog.read_yaml(path)
    except catalog.CatalogError as exc:
        raise TuningError(_yaml_error(path, str(exc))) from None
    except OSError as exc:
        raise TuningError(f"{path}: cannot read the tuning file ({exc})") from None
    try:
        return _build(path, data if data is not None else {}, detections, document)
    except SpecError as exc:
        line = catalog.line_of(document, exc.path)
        raise TuningError(f"{path}:{line}: {exc} (see docs/tuning.md; `keytrail tuning check` validates)") from None


def _yaml_error(path: Path, message: str) -> str:
    """PyYAML's multi-line report as one line naming the file and line: `keytrail.yaml:3: duplicate key ...`."""
    lines = re.findall(r"line (\d+), column", message)
    problem = message.split("\n", 1)[0].split("invalid YAML: ", 1)[-1]
    line = lines[0] if lines else "1"  # where the broken construct starts
    return f"{path}:{line}: invalid YAML: {problem}: fix the YAML (`keytrail tuning check` validates it)"


def _build(path: Path, data: Any, detections: Sequence[Query], document: Any) -> Tuning:
    parsed = validation.convert(data, spec.TuningSpec)
    by_id = {q.id: q for q in detections}
    known_tags = sorted({tag for q in detections for tag in detection_tags(q)})

    def source(key_path: KeyPath) -> str:
        return f"{path.name}:{catalog.line_of(document, key_path)}"

    tuned: dict[str, DetectionTuning] = {}
    for detection_id, value in parsed.detections.items():
        where: KeyPath = ("detections", detection_id)
        if detection_id not in by_id:
            raise SpecError(where, f"unknown detection {detection_id!r} (known: {', '.join(sorted(by_id))})")
        item = validation.convert(value if value is not None else {}, spec.DetectionSpec, where)
        query = by_id[detection_id]
        params = _params(query, item.params, where)
        realert = None
        if item.realert is not None:
            try:
                realert = parse_duration(item.realert)
            except ValueError as exc:
                raise SpecError((*where, "realert"), f"detections.{detection_id}.realert: {exc}") from None
        exceptions = tuple(
            _exception(each, (*where, "exceptions", n), source, scoped=True) for n, each in enumerate(item.exceptions)
        )
        tuned[detection_id] = DetectionTuning(detection_id, item.enabled, item.severity, params, realert, exceptions)
    global_ = tuple(
        _exception(each, ("exceptions", n), source, scoped=False) for n, each in enumerate(parsed.exceptions)
    )
    for n, each in enumerate(global_):
        if unknown := [d for d in each.detections if d not in by_id]:
            raise SpecError(("exceptions", n, "detections"), f"unknown detection(s) {', '.join(unknown)}")
        if unknown := [t for t in each.tags if t not in known_tags]:
            raise SpecError(
                ("exceptions", n, "tags"), f"unknown tag(s) {', '.join(unknown)} (known: {', '.join(known_tags)})"
            )
    _check_unique_ids((*(e for d in tuned.values() for e in d.exceptions), *global_))
    return Tuning(path=path, exceptions=global_, detections=tuned)


def _params(query: Query, values: dict[str, Any], where: KeyPath) -> dict[str, Any]:
    """The file's params for `query`, coerced exactly as `--param` values are."""
    params: dict[str, Any] = {}
    for name, value in values.items():
        at = (*where, "params", name)
        try:
            param = query.param(name)
        except KeyError:
            declared = ", ".join(p.name for p in query.params) or "none"
            raise SpecError(at, f"{query.id} has no parameter {name!r} (declared: {declared})") from None
        try:
            params[name] = catalog.coerce(param.type, value, where=f"detections.{query.id}.params.{name}")
        except ValueError as exc:
            raise SpecError(at, str(exc)) from None
    return params


def _exception(item: spec.ExceptionSpec, where: KeyPath, source: Any, *, scoped: bool) -> TuningException:
    label = validation.dotted(where)
    if scoped and (item.detections is not None or item.tags is not None):
        key = "detections" if item.detections is not None else "tags"
        raise SpecError((*where, key), f"{label}.{key}: only global exceptions choose detections; this one is "
                        "already under its detection")  # fmt: skip
    if item.detections is not None and item.tags is not None:
        raise SpecError((*where, "tags"), f"{label}: give `detections` or `tags`, not both")
    match: dict[str, tuple[str, ...]] = {}
    for name in MATCH_FIELDS:
        values = spec.patterns(getattr(item.match, name))
        for n, pattern in enumerate(values):
            at = (*where, "match", name) if isinstance(getattr(item.match, name), str) else (*where, "match", name, n)
            spec.check_pattern(name, pattern, at)
        match[name] = values
    if not any(match.values()):
        raise SpecError(
            (*where, "match"),
            f"{label}.match is empty and would match every finding: name a principal, resource, account, region "
            "or source_ip (or set `enabled: false` on the detection)",
        )
    return TuningException(
        ref=item.id or label,
        source=source(where),
        match=Match(**match),
        reason=item.reason,
        owner=item.owner,
        expires=item.expires,
        detections=tuple(item.detections or ()),
        tags=tuple(item.tags or ()),
    )


def _check_unique_ids(exceptions: Iterable[TuningException]) -> None:
    seen: dict[str, str] = {}
    for each in exceptions:
        if each.ref in seen:
            raise TuningError(f"{each.source}: exception id {each.ref!r} is already used at {seen[each.ref]}")
        seen[each.ref] = each.source


def tuned_query(query: Query, tuning: DetectionTuning | None) -> Query:
    """`query` as the tuning file sets it up (enabled, base severity, re-alert interval)."""
    if tuning is None:
        return query
    changes: dict[str, Any] = {}
    if tuning.enabled is not None:
        changes["enabled"] = tuning.enabled
    if tuning.severity is not None:
        changes["severity"] = tuning.severity
    if tuning.realert is not None:
        changes["realert"] = tuning.realert
    return dataclasses.replace(query, **changes) if changes else query
