"""analysis summaries over a small in-memory `events` table, alert filtering, and the plots they feed."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline import analysis, cases, events, plots
from pipeline.alerting import outbox
from pipeline.alerting.alert import Alert
from pipeline.engine import Engine

SINCE = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
UNTIL = dt.datetime(2024, 5, 2, tzinfo=dt.UTC)
ORDERS_SESSION = "arn:aws:sts::111122223333:assumed-role/orders-api/i-0fedcba987654321"
ORDERS_ROLE = "arn:aws:iam::111122223333:role/orders-api"  # the caller summaries name: the role, not a session


def _record(base: str, at: str, **overrides: Any) -> dict[str, Any]:
    record = cases.deep_merge(cases.load_fixture(base), overrides)
    record["eventTime"] = at
    record["eventID"] = f"{base}-{at}-{len(overrides)}"
    return record


@pytest.fixture
def engine() -> Engine:
    orders = {
        "userIdentity": {
            "arn": ORDERS_SESSION,
            "sessionContext": {
                "sessionIssuer": {"arn": "arn:aws:iam::111122223333:role/orders-api", "userName": "orders-api"}
            },
        }
    }
    records = [
        _record("kms_decrypt", "2024-05-01T10:00:00Z"),
        _record("kms_decrypt", "2024-05-01T10:05:00Z", requestParameters={"encryptionContext": {"tenant": "globex"}}),
        _record("kms_decrypt", "2024-05-01T11:00:00Z", errorCode="AccessDenied", **orders),
        _record("kms_decrypt", "2024-05-01T11:01:00Z", errorCode="InvalidCiphertextException", **orders),
        _record("secrets_batch_get_secret_value", "2024-05-01T12:00:00Z"),
        _record("secrets_get_secret_value", "2024-05-01T12:30:00Z"),
        _record("kms_decrypt", "2024-05-02T00:00:00Z"),  # outside the window
    ]
    with Engine.from_table(events.normalize_many(records), since=SINCE, until=UNTIL) as session:
        yield session


def test_totals_split_denials_from_other_errors(engine: Engine) -> None:
    assert analysis.totals(engine) == {"events": 6, "principals": 4, "keys": 1, "secrets": 3, "denied": 1, "errors": 1}


def test_hourly_volume_and_errors(engine: Engine) -> None:
    per_hour = analysis.calls_per_hour(engine)
    assert per_hour.filter(pl.col("event_name") == "Decrypt")["calls"].to_list() == [2, 2]
    errors = analysis.errors_per_hour(engine)
    assert sorted(errors["error_code"].to_list()) == ["AccessDenied", "InvalidCiphertextException"]


def test_top_secrets_count_every_secret_of_a_batch_read(engine: Engine) -> None:
    secrets = analysis.top_secrets(engine)
    assert secrets.height == 3 and secrets["reads"].to_list() == [1, 1, 1]
    assert any("MyTestSecret" in s for s in secrets["secret"].to_list())


def test_context_cardinality_counts_distinct_values(engine: Engine) -> None:
    cardinality = analysis.context_cardinality(engine)
    tenant = cardinality.filter(pl.col("context_key") == "tenant").row(0, named=True)
    assert tenant["distinct_values"] == 2 and tenant["calls"] == 4 and tenant["principals"] == 2


def test_a_role_name_finds_its_sessions_calls_with_outcome_classes(engine: Engine) -> None:
    calls = analysis.principal_calls(engine, "orders-api")
    assert calls["outcome_class"].to_list() == ["denied", "error"]
    assert analysis.principal_sources(engine, ORDERS_SESSION)["calls"].to_list() == [2]
    touched = analysis.principal_resources(engine, "orders-api").row(0, named=True)
    assert touched["kind"] == "key" and touched["calls"] == 2 and touched["denied"] == 1
    top = analysis.top_principals(engine)
    assert top.filter(pl.col("principal") == ORDERS_ROLE)["denied"].to_list() == [1]


def test_investigations_run_over_the_same_session(engine: Engine) -> None:
    denied = analysis.investigation(engine, "denied_activity")
    assert denied["principal"].to_list() == [ORDERS_ROLE]


def test_alerts_overlapping_the_window_and_of_a_principal(lake: Path) -> None:
    def alert(alert_id: str, principal: str, day: int) -> Alert:
        seen = dt.datetime(2024, 5, day, 3, tzinfo=dt.UTC)
        return Alert(alert_id, "kms_decrypt_volume_spike", "spike", "high", "111122223333", "us-east-1", principal,
                     None, seen, seen, 10)  # fmt: skip

    outbox.enqueue(lake, [alert("a" * 32, "arn:aws:iam::111122223333:role/orders-api", 1),
                          alert("b" * 32, "arn:aws:iam::111122223333:role/etl", 1),
                          alert("c" * 32, "arn:aws:iam::111122223333:role/orders-api", 3)], now=UNTIL)  # fmt: skip
    assert sorted(analysis.alerts(lake, SINCE, UNTIL)["alert_id"]) == ["a" * 32, "b" * 32]
    assert analysis.alerts(lake, SINCE, UNTIL, principal=ORDERS_SESSION)["alert_id"].to_list() == ["a" * 32]
    assert analysis.alerts(lake, SINCE, UNTIL, principal="etl")["alert_id"].to_list() == ["b" * 32]
    assert analysis.alerts(lake / "none", SINCE, UNTIL).is_empty()


def test_plots_draw_data_and_empty_frames(engine: Engine) -> None:
    per_hour = analysis.calls_per_hour(engine)
    figures = [
        plots.stacked_over_time(per_hour, time="hour", series="event_name", value="calls", title="t"),
        plots.stacked_over_time(per_hour.clear(), time="hour", series="event_name", value="calls", title="t"),
        plots.top_bars(analysis.top_principals(engine), label="principal", value="calls", title="t"),
        plots.top_bars(analysis.top_keys(engine).clear(), label="key", value="calls", title="t"),
        plots.timeline(analysis.principal_calls(engine, "orders-api"), title="t"),
        plots.timeline(analysis.principal_calls(engine, "nobody"), title="t"),
    ]
    stacked = figures[0].axes[0]
    assert sum(patch.get_height() for patch in stacked.patches) == 6  # every call is in a bar
    assert len(figures[4].axes[0].collections) == 2  # denied and error dots
    for figure in figures:
        uri = plots.to_data_uri(figure)
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG")


def test_the_subject_is_an_alert_a_principal_or_the_worst_alert_of_the_window(lake: Path) -> None:
    first = dt.datetime(2024, 5, 1, 3, tzinfo=dt.UTC)
    medium = Alert("m" * 32, "d", "t", "medium", None, None, "arn:aws:iam::1:role/a", None, first, first, 1)
    critical = Alert("c" * 32, "d", "t", "critical", None, None, "arn:aws:iam::1:role/b", None, first, first, 1)
    outbox.enqueue(lake, [medium, critical], now=UNTIL)
    now = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    worst = analysis.subject(lake, now=now, start="-1d")
    assert worst.alert == critical and worst.principal == "arn:aws:iam::1:role/b"
    assert (worst.since, worst.until) == (first - dt.timedelta(hours=1), first + dt.timedelta(hours=1))
    assert analysis.subject(lake, now=now, alert_id="mmmm").alert == medium
    chosen = analysis.subject(lake, now=now, principal_arn="etl", start="-2h")
    assert chosen.alert is None and chosen.since == now - dt.timedelta(hours=2) and chosen.until == now
    with pytest.raises(ValueError, match="alert_id or principal_arn"):
        analysis.subject(lake, now=now, start="-1h")
