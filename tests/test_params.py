"""params: typed value coercion (YAML defaults, case params, CLI --param, the engine) and `$name` scanning."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline import params


def test_sql_parameters_ignore_strings_identifiers_and_comments() -> None:
    sql = """-- $not_me
    SELECT '$.a', 'it''s $no', "$col", $yes /* $nor_me */ FROM t WHERE x = $also_yes"""
    assert params.sql_parameters(sql) == {"yes", "also_yes"}
    with pytest.raises(ValueError, match="positional"):
        params.sql_parameters("SELECT $1")


def test_coercion_of_every_type() -> None:
    assert params.coerce("int", "42") == 42
    assert params.coerce("float", "2.5") == 2.5
    assert params.coerce("bool", "yes") is True and params.coerce("bool", False) is False
    assert params.coerce("duration", "1h30m") == dt.timedelta(minutes=90)
    assert params.coerce("duration", "7d") == dt.timedelta(days=7)
    assert params.coerce("timestamp", "2024-05-01T12:00:00+02:00") == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert params.coerce("timestamp", "2024-05-01T10:00:00") == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert params.coerce("list[str]", "a, b,,c") == ["a", "b", "c"]
    assert params.coerce("list[str]", ["x"]) == ["x"]
    for type_, value in [("int", True), ("int", 1.5), ("bool", "maybe"), ("duration", "10 minutes"), ("str", 3)]:
        with pytest.raises(ValueError, match="where"):
            params.coerce(type_, value, where="where")
