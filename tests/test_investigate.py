"""Investigation params: relative/ISO times, name=value parsing, validation errors, alert resolution, examples."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import pytest

from pipeline import investigate
from pipeline.alerting import outbox
from pipeline.alerting.alert import Alert
from pipeline.investigate import InvestigationError
from pipeline.times import parse_time
from tests.analyst_lake import make_alert

NOW = dt.datetime(2024, 5, 8, 12, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-24h", NOW - dt.timedelta(hours=24)),
        ("-7d", NOW - dt.timedelta(days=7)),
        ("- 90m", NOW - dt.timedelta(minutes=90)),
        ("+1h30m", NOW + dt.timedelta(hours=1, minutes=30)),
        ("2024-05-01", dt.datetime(2024, 5, 1, tzinfo=dt.UTC)),
        ("2024-05-01T10:00Z", dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)),
        ("2024-05-01T12:00:00+02:00", dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)),
        ("2024-05-01T10:00:00", dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)),  # naive = UTC
    ],
)
def test_times_are_iso_or_relative_to_now(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, NOW) == expected
    assert parse_time(text, NOW).tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "-7", "-7x", "2024-13-01", ""])
def test_bad_times_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="-24h"):
        parse_time(text, NOW)


def test_assignments() -> None:
    assert investigate.parse_assignments(["key=alias/a=b", "bucket=1h", "principal="]) == {
        "key": "alias/a=b",
        "bucket": "1h",
        "principal": "",
    }
    with pytest.raises(InvestigationError, match="name=value"):
        investigate.parse_assignments(["key"])
    with pytest.raises(InvestigationError, match="twice"):
        investigate.parse_assignments(["key=a", "key=b"])


def test_resolve_types_values_and_defaults_the_window() -> None:
    query = investigate.get("key_usage")
    resolved = investigate.resolve(query, {"key": "k1", "bucket": "15m", "since": "-2d"}, now=NOW)
    assert resolved.params == {"key": "k1", "bucket": dt.timedelta(minutes=15)}
    assert (resolved.since, resolved.until) == (NOW - dt.timedelta(days=2), NOW)
    default = investigate.resolve(query, {"key": "k1"}, now=NOW)
    assert default.since == NOW - dt.timedelta(hours=24) and default.params["bucket"] == dt.timedelta(hours=1)


def test_resolve_errors_list_the_valid_params() -> None:
    query = investigate.get("key_usage")
    with pytest.raises(InvestigationError) as unknown:
        investigate.resolve(query, {"key": "k1", "buckt": "1h"}, now=NOW)
    assert "buckt" in str(unknown.value) and "bucket (duration, 1h)" in str(unknown.value)
    assert "key (str, required)" in str(unknown.value) and "since (timestamp, -24h)" in str(unknown.value)
    with pytest.raises(InvestigationError, match="needs key") as missing:
        investigate.resolve(query, {}, now=NOW)
    assert "keytrail query run key_usage --param key=" in str(missing.value)
    with pytest.raises(InvestigationError, match="bucket"):
        investigate.resolve(query, {"key": "k1", "bucket": "soon"}, now=NOW)
    with pytest.raises(InvestigationError, match="must be before"):
        investigate.resolve(query, {"key": "k1", "since": "now", "until": "-1h"}, now=NOW)


def test_trusted_accounts_are_accepted_only_where_the_query_uses_them() -> None:
    cross = investigate.resolve(
        investigate.get("cross_account_activity"), {"trusted_accounts": "111122223333,444455556666"}, now=NOW
    )
    assert cross.bound()["trusted_accounts"] == "111122223333,444455556666"  # the engine coerces built-ins
    with pytest.raises(InvestigationError, match="trusted_accounts"):
        investigate.resolve(investigate.get("ip_activity"), {"source_ip": "1.2.3.4", "trusted_accounts": "1"}, now=NOW)


def _alert(**overrides: object) -> Alert:
    """An access-denied storm keyed by source IP (no principal, no resource)."""
    storm = {
        "alert_id": "0123456789abcdef" * 2,
        "detection_id": "access_denied_storm",
        "principal_arn": None,
        "resource_arn": None,
        "first_seen": dt.datetime(2024, 5, 8, 5, 9, tzinfo=dt.UTC),
        "last_seen": dt.datetime(2024, 5, 8, 5, 13, tzinfo=dt.UTC),
        "context": {"actor_kind": "source_ip", "actor": "203.0.113.201"},
    }
    return make_alert(**{**storm, **overrides})


def test_alert_params_pad_the_span_and_find_the_source_ip() -> None:
    params = investigate.alert_params(_alert())
    assert params["source_ip"] == "203.0.113.201" and params["principal_arn"] == ""
    assert params["since"] == dt.datetime(2024, 5, 8, 5, 4, tzinfo=dt.UTC)
    assert params["until"] == dt.datetime(2024, 5, 8, 5, 18, tzinfo=dt.UTC)
    by_principal = investigate.alert_params(_alert(principal_arn="arn:aws:iam::1:role/r", context={"actor": "x"}))
    assert by_principal["source_ip"] == "" and by_principal["principal_arn"] == "arn:aws:iam::1:role/r"


def test_an_alert_prefix_resolves_from_the_outbox_and_explicit_values_win(lake: Path) -> None:
    alert = _alert()
    outbox.enqueue(lake, [alert], now=NOW)
    (lake / "events").mkdir()
    query = investigate.get("alert_evidence")
    resolved = investigate.resolve(query, {"alert_id": alert.alert_id[:8]}, now=NOW, lake_path=lake)
    assert resolved.params["alert_id"] == alert.alert_id
    assert resolved.params["source_ip"] == "203.0.113.201"
    assert resolved.since == alert.first_seen - investigate.EVIDENCE_PAD
    explicit = investigate.resolve(
        query, {"alert_id": alert.alert_id[:8], "source_ip": "", "until": "2024-05-08T06:00Z"}, now=NOW, lake_path=lake
    )
    assert explicit.params["source_ip"] == "" and explicit.until == dt.datetime(2024, 5, 8, 6, tzinfo=dt.UTC)
    with pytest.raises(InvestigationError, match="keytrail alerts list"):
        investigate.resolve(query, {"alert_id": "ffff"}, now=NOW, lake_path=lake)


def test_every_investigation_is_complete_and_its_example_resolves() -> None:
    for query in investigate.load():
        assert query.next_steps and query.example and any(case.expect for case in query.tests), query.id
        assert all(p.help for p in query.params)
        words = shlex.split(investigate.example_command(query))
        values = investigate.parse_assignments(w for w in words[5::2])
        assert words[:4] == ["keytrail", "query", "run", query.id] and set(words[4::2]) == {"--param"}
        investigate.resolve(query, values, now=NOW)  # the YAML example is complete and well typed


def test_example_command_quotes_for_the_shell() -> None:
    query = investigate.get("secret_access")
    command = investigate.example_command(query, {"secret": "prod/a b's"}, lake_path=Path("/my lake"))
    assert shlex.split(command) == [
        "keytrail", "query", "run", "secret_access", "--param", "secret=prod/a b's", "--lake", "/my lake",
    ]  # fmt: skip
