"""events.normalize on real-shaped records: identity variants, key/secret promotion, context map."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest

from pipeline import events


def _record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:etl-session",
            "arn": "arn:aws:sts::111122223333:assumed-role/etl-worker/etl-session",
            "accountId": "111122223333",
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLE",
                    "arn": "arn:aws:iam::111122223333:role/etl-worker",
                    "accountId": "111122223333",
                    "userName": "etl-worker",
                },
                "attributes": {"creationDate": "2024-05-01T10:00:00Z", "mfaAuthenticated": "false"},
            },
        },
        "eventTime": "2024-05-01T10:15:42Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "10.0.1.15",
        "userAgent": "aws-sdk-java/2.20.0",
        "requestParameters": {
            "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "encryptionContext": {"tenant": "acme"},
        },
        "responseElements": None,
        "requestID": "c6f9ad7f-0000-4000-8000-000000000001",
        "eventID": "6f6c1a39-0000-4000-8000-000000000001",
        "readOnly": True,
        "resources": [
            {
                "accountId": "111122223333",
                "type": "AWS::KMS::Key",
                "ARN": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            }
        ],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management",
    }
    base.update(overrides)
    return base


def test_decrypt_takes_key_from_resources_and_context_as_map() -> None:
    row = events.normalize(_record())
    assert row["key_arn"] == "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert row["key_id"] == "1234abcd-12ab-34cd-56ef-1234567890ab"
    assert row["encryption_context"] == [("tenant", "acme")]
    assert row["event_time"] == dt.datetime(2024, 5, 1, 10, 15, 42, tzinfo=dt.UTC)
    assert row["event_date"] == dt.date(2024, 5, 1)
    assert row["principal_type"] == "AssumedRole"
    assert row["session_issuer_arn"] == "arn:aws:iam::111122223333:role/etl-worker"
    assert row["principal_name"] == "etl-worker/etl-session"
    assert row["session_mfa"] is False
    assert row["read_only"] is True
    assert json.loads(row["resources"])[0]["type"] == "AWS::KMS::Key"
    assert row["response_elements"] is None


def test_bare_key_id_expands_to_arn_and_alias_stays_as_written() -> None:
    bare = events.normalize(
        _record(resources=None, requestParameters={"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab"})
    )
    assert bare["key_arn"] == "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    alias = events.normalize(_record(resources=None, requestParameters={"keyId": "alias/app"}))
    assert alias["key_arn"] is None
    assert alias["key_id"] == "alias/app"


def test_service_event_without_principal() -> None:
    row = events.normalize(
        _record(
            userIdentity={"accountId": "111122223333", "invokedBy": "secretsmanager.amazonaws.com"},
            eventSource="secretsmanager.amazonaws.com",
            eventName="RotationFailed",
            eventType="AwsServiceEvent",
            requestParameters=None,
            resources=None,
            serviceEventDetails={"secretId": "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf"},
        )
    )
    assert row["principal_arn"] is None and row["principal_type"] is None
    assert row["principal_account_id"] == "111122223333"
    assert row["invoked_by"] == "secretsmanager.amazonaws.com"
    assert json.loads(row["service_event_details"])["secretId"].endswith("db-AbCdEf")
    assert row["key_arn"] is None


def test_batch_get_secret_value_names_every_secret() -> None:
    row = events.normalize(
        _record(
            eventSource="secretsmanager.amazonaws.com",
            eventName="BatchGetSecretValue",
            resources=None,
            requestParameters={"secretIdList": ["arn:aws:secretsmanager:us-east-1:1:secret:a", "b"]},
        )
    )
    assert row["secret_ids"] == ["arn:aws:secretsmanager:us-east-1:1:secret:a", "b"]
    assert row["secret_id"] == "arn:aws:secretsmanager:us-east-1:1:secret:a"
    assert row["encryption_context"] is None


def test_rows_from_log_keeps_sources_and_rejects_wrong_types() -> None:
    good = _record()
    other = _record(eventSource="ec2.amazonaws.com", eventID="other")
    wrong = _record(eventID="wrong", userIdentity="not-an-object")
    data = json.dumps({"Records": [good, other, wrong]}).encode()
    result = events.rows_from_log(data, "k", events.DEFAULT_SOURCES)
    assert result.seen == 3
    assert [row[0] for row in result.rows] == [good["eventID"]]
    assert len(result.rejected) == 1 and result.rejected[0].index == 2
    assert "userIdentity" in result.rejected[0].reason


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-05-08T10:15:00Z", dt.datetime(2024, 5, 8, 10, 15, tzinfo=dt.UTC)),
        ("2024-05-08T10:15:00.123Z", dt.datetime(2024, 5, 8, 10, 15, tzinfo=dt.UTC)),  # kept to the second
        ("2024-05-08T10:15:00", dt.datetime(2024, 5, 8, 10, 15, tzinfo=dt.UTC)),  # no zone: UTC
        ("2024-05-08T10:15:00+05:00", dt.datetime(2024, 5, 8, 5, 15, tzinfo=dt.UTC)),
        ("2024-05-08T10:15:00+0530", dt.datetime(2024, 5, 8, 4, 45, tzinfo=dt.UTC)),
        ("2024-05-08T01:15:00.999-02:00", dt.datetime(2024, 5, 8, 3, 15, tzinfo=dt.UTC)),
        ("2024-05-08T00:30:00+01:00", dt.datetime(2024, 5, 7, 23, 30, tzinfo=dt.UTC)),  # the partition moves too
    ],
)
def test_event_time_offsets_are_honoured(written: str, expected: dt.datetime) -> None:
    row = events.normalize(_record(eventTime=written))  # the path YAML cases take
    assert (row["event_time"], row["event_date"]) == (expected, expected.date())
    data = json.dumps({"Records": [_record(eventTime=written)]}).encode()
    batch = events.rows_to_batch(events.rows_from_log(data, "k", events.DEFAULT_SOURCES).rows)  # the ingest path
    assert batch.column(batch.schema.get_field_index("event_time")).to_pylist() == [expected]


def test_a_utc_event_time_passes_through_untouched() -> None:
    text = "2024-05-08T10:15:00Z"
    assert events.EventTimeRange().utc_text(text) is text  # the hot path builds nothing


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("2024-05-08T10:15:00 UTC", "unparseable eventTime"),  # a zone that is not an offset: its instant is unknown
        ("2024-05-08T10:15:00+5", "unparseable eventTime"),
        ("2024-05-08 10:15:00Z", "unparseable eventTime"),
        ("2024-02-30T10:15:00Z", "unparseable eventTime"),
        ("9999-12-31T23:59:59Z", "is outside 2013-01-01 00:00:00Z .. 2200-01-01 00:00:00Z"),
        ("2012-12-31T23:59:59Z", "is outside 2013-01-01"),
        ("2013-01-01T00:30:00+01:00", "is outside 2013-01-01"),  # 2012 in UTC
        ("0001-01-01T00:00:00+01:00", "unparseable eventTime"),  # no UTC instant at all
    ],
)
def test_event_times_without_a_usable_instant_are_rejected(written: str, reason: str) -> None:
    data = json.dumps({"Records": [_record(eventTime=written), _record(eventID="fine")]}).encode()
    result = events.rows_from_log(data, "k", events.DEFAULT_SOURCES)
    assert [row[0] for row in result.rows] == ["fine"]
    assert [r.index for r in result.rejected] == [0] and reason in result.rejected[0].reason
    assert written in result.rejected[0].reason


def test_event_times_are_bounded_by_when_the_object_was_written() -> None:
    written = dt.datetime(2024, 5, 8, 12, tzinfo=dt.UTC)
    records = [
        _record(eventID="day-later", eventTime="2024-05-09T11:59:59Z"),
        _record(eventID="too-late", eventTime="2024-05-09T12:00:01Z"),
        _record(eventID="too-late-offset", eventTime="2024-05-09T14:00:01+02:00"),
    ]
    data = json.dumps({"Records": records}).encode()
    result = events.rows_from_log(data, "k", events.DEFAULT_SOURCES, written)
    assert [row[0] for row in result.rows] == ["day-later"]
    assert [r.index for r in result.rejected] == [1, 2]
    assert "a day after its log object was written, 2024-05-08 12:00:00Z" in result.rejected[0].reason
    unknown = events.rows_from_log(data, "k", events.DEFAULT_SOURCES)  # no write time: only times.LATEST bounds
    assert len(unknown.rows) == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "empty"), (b"not json", "invalid JSON"), (b'{"foo": []}', "not a CloudTrail log file")],
)
def test_unreadable_objects_raise_log_format_error(payload: bytes, reason: str) -> None:
    with pytest.raises(events.LogFormatError, match=reason):
        events.rows_from_log(payload, "k", events.DEFAULT_SOURCES)


def test_real_corpus_normalizes_without_rejections(realdata) -> None:
    kept = 0
    for path in sorted((realdata / "corpus").rglob("*.json.gz")):
        result = events.rows_from_log(gzip.decompress(path.read_bytes()), str(path), events.DEFAULT_SOURCES)
        assert result.rejected == [], path
        kept += len(result.rows)
    facts = json.loads((realdata / "facts.json").read_text())
    # The default sources keep CloudTrail's own events too: 35 in the invictus trail, 3 in the Stratus detonations.
    assert kept == facts["kms"]["events"] + facts["secretsmanager"]["events"] + 35 + 3


def _deep(levels: int) -> bytes:
    return b'{"a": ' * levels + b"1" + b"}" * levels


DEEP = _deep(5000)
TOO_DEEP_CASES = {
    "truncated": (b'{"Records": [' + DEEP + b", {}", "no complete Records array"),
    "trailing": (b'{"Records": [' + DEEP + b"]} trailing", "trailing characters"),
    "records-not-array": (b'{"x": ' + DEEP + b', "Records": {"a": 1}}', "Records is not an array"),
    "empty-element": (b'{"Records": [' + DEEP + b", , {}]}", "empty element"),
    "no-records": (b'{"other": [' + DEEP + b"]}", "no complete Records array"),
    "unterminated": (b'{"Records": [' + DEEP + b', "unterminated]}', "unterminated string"),
    "unbalanced": (b'{"Records": [' + DEEP + b"]}}", "unbalanced|trailing"),
}


@pytest.mark.parametrize(("payload", "reason"), TOO_DEEP_CASES.values(), ids=TOO_DEEP_CASES.keys())
def test_too_deep_to_decode_objects_are_split_flat_or_rejected_whole(payload: bytes, reason: str) -> None:
    with pytest.raises(events.LogFormatError, match=reason):
        events.rows_from_log(payload, "k", events.DEFAULT_SOURCES)


def test_the_flat_split_wants_an_object_at_the_top() -> None:
    from pipeline.record_split import split_records_flat

    with pytest.raises(events.LogFormatError, match="top level is not an object"):
        split_records_flat(b"[" + DEEP + b"]")
    assert split_records_flat(b' {"Records": [ ]} ') == []
    assert split_records_flat(b'{"Records": [1], "Records": [ {"a": "]"} , 2 ]}') == [b'{"a": "]"}', b"2"]


def test_a_record_too_deep_to_decode_is_rejected_and_its_neighbours_kept() -> None:
    good = _record()
    text = json.dumps({"Records": [good, {"x": "MARK"}, good | {"eventID": "second"}]}).encode()
    # strings with brackets, commas and escaped quotes must not confuse the flat split
    text = text.replace(b'"MARK"', _deep(3000)).replace(b"aws-sdk-java/2.20.0", b'a \\"[{,:}]\\" b')
    result = events.rows_from_log(text, "k", events.DEFAULT_SOURCES)
    assert result.seen == 3 and [row[0] for row in result.rows] == [good["eventID"], "second"]
    assert [(r.index, r.raw) for r in result.rejected] == [(1, b'{"x": ' + _deep(3000) + b"}")]
    user_agent = events.ROW_FIELDS.index("user_agent")
    assert [row[user_agent] for row in result.rows] == ['a "[{,:}]" b'] * 2  # decoded as usual


def test_a_string_msgspec_refuses_rejects_one_record_not_the_object() -> None:
    """A lone surrogate escape is legal JSON syntax (a Java-made log can hold one) but msgspec calls the whole
    document malformed, even inside a part it keeps raw: that made the whole object unreadable."""
    good = _record()
    text = json.dumps({"Records": [good, _record(eventID="lone", userAgent="MARK"), good | {"eventID": "2"}]})
    payload = text.replace('"MARK"', '"\\ud800 lone"').encode()
    result = events.rows_from_log(payload, "k", events.DEFAULT_SOURCES)
    assert [row[0] for row in result.rows] == [good["eventID"], "2"]
    assert [r.index for r in result.rejected] == [1] and "malformed" in result.rejected[0].reason
    truncated = payload[: len(payload) // 2]  # the array itself is broken: the whole object is
    with pytest.raises(events.LogFormatError, match="invalid JSON"):
        events.rows_from_log(truncated, "k", events.DEFAULT_SOURCES)
