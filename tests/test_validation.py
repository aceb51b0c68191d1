"""validation: msgspec.convert whose failures name the key path and say in words what was expected."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from msgspec import Meta, Struct

from pipeline import validation

Lower = Annotated[str, Meta(pattern="^[a-z]+$", extra={"error": "{where}: {value!r} must be lowercase"})]


class Item(Struct, forbid_unknown_fields=True, kw_only=True):
    name: Lower
    count: Annotated[int, Meta(ge=1, extra={"error": "{where} must be a positive integer"})] = 1
    wait: Annotated[str | int, Meta(description="a duration")] = "1s"


class Doc(Struct, forbid_unknown_fields=True, kw_only=True):
    items: list[Item]
    tags: dict[Lower, int] | None = None


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"items": [{"name": "a"}, {"name": "b", "colour": 1}]},
            ("items", 1, "colour"),
            "items[1]: unknown key 'colour' (allowed: count, name, wait)",
        ),
        ({"items": [], "size": 1}, ("size",), "unknown key 'size' (allowed: items, tags)"),
        ({"items": [{"name": "a", "count": 0}]}, ("items", 0, "count"), "items[0].count must be a positive integer"),
        (
            {"items": [{"name": "a", "count": True}]},
            ("items", 0, "count"),
            "items[0].count must be an integer, got true or false",
        ),
        ({"items": [{"name": "A"}]}, ("items", 0, "name"), "items[0].name: 'A' must be lowercase"),
        (
            {"items": [{"name": "a", "wait": 1.5}]},
            ("items", 0, "wait"),
            "items[0].wait must be a duration, got a number",
        ),
        ({"items": [{}]}, ("items", 0), "items[0]: missing required key 'name'"),
        ({}, (), "missing required key 'items'"),
        ({"items": {}}, ("items",), "items must be a list, got a mapping"),
        ({"items": [], "tags": {"ok": 1, "Bad": 2}}, ("tags", "Bad"), "tags: 'Bad' must be lowercase"),
        ({"items": [], "tags": []}, ("tags",), "tags must be a mapping or null, got a list"),
        ([], (), "top level must be a mapping, got a list"),
    ],
)
def test_failures_name_the_key_path_and_the_rule(data: Any, path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(msgspec.ValidationError):  # the raw error these replace
        msgspec.convert(data, Doc)
    with pytest.raises(validation.SpecError) as info:
        validation.convert(data, Doc)
    assert info.value.path == path
    assert str(info.value) == message


def test_a_prefix_places_a_nested_conversion_in_its_document() -> None:
    with pytest.raises(validation.SpecError) as info:
        validation.convert({"name": "A"}, Item, ("params", "x"))
    assert info.value.path == ("params", "x", "name")
    assert str(info.value) == "params.x.name: 'A' must be lowercase"
    assert validation.convert({"name": "a"}, Item, ("params", "x")) == Item(name="a")


def test_dotted_paths() -> None:
    assert validation.dotted(("tests", 2, "events", 0, "with")) == "tests[2].events[0].with"
    assert validation.dotted(()) == ""
