"""Output is data, never markup or control: hostile strings from a trail go through every printing command.

A small lake (written through the real writer) holds events whose trail fields carry rich markup, ESC and NUL
bytes, a bidi override, line separators and a `:secret:` emoji code; two detections fire on them. Every
command that prints them must exit normally, print no raw control/bidi/separator character (or emoji) to a
terminal or into HTML, keep an SNS Subject printable ASCII, and still show the value: as its visible escape
(`safe_text.visible`), or exactly in JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from pipeline import cases, detect, events, safe_text
from pipeline.alerting import outbox
from pipeline.alerting.alert import Alert
from pipeline.alerting.messages import MAX_SUBJECT_CHARS, subject
from pipeline.catalog import EventSpec
from pipeline.cli import app
from tests.trails import commit_table, log_bytes, log_key, record, write_local

UTC = dt.UTC
SINCE = "2024-05-08T10:00:00Z"
UNTIL = "2024-05-08T11:00:00Z"
WINDOW = ("--since", SINCE, "--until", UNTIL)
AT = dt.datetime(2024, 5, 8, 10, 15, tzinfo=UTC)
NOW = dt.datetime(2024, 5, 8, 12, tzinfo=UTC)

# An Identity Center session names the person: the session name is what the CLI and Subjects print.
SESSION = "[/bold]x\x1b[31m\x00"
ROLE = "AWSReservedSSO_Admin_0123456789abcdef"
PRINCIPAL = f"arn:aws:sts::111122223333:assumed-role/{ROLE}/{SESSION}"
IDENTITY = {
    "type": "AssumedRole",
    "principalId": "AROAEXAMPLEHOSTILE:x",
    "arn": PRINCIPAL,
    "accountId": "111122223333",
    "sessionContext": {
        "sessionIssuer": {
            "type": "Role",
            "arn": f"arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/{ROLE}",
            "userName": ROLE,
        }
    },
}
USER_AGENT = "curl/8.5\x00\u202eevil"
SOURCE_IP = "evil\x1b]0;pwned\x07.example.com"  # a service call may name a host here
SECRET = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db\x85[/bold]-AbCdEf"
CONTEXT_VALUE = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/x\u2028y"
MATHTEXT_USER = "arn:aws:iam::111122223333:user/$\\notacommand{$"  # matplotlib would parse `$...$`
SOURCE_OBJECT = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/05/08/[/bold]\x1b[2J.json.gz"
LAST_ERROR = "SNS said [/red]no\x1b[2J\u202e"

HIDDEN = ("\x1b", "\x00", "\x07", "\x85", "\u2028", "\u202e", "㊙")
runner = CliRunner()


def keytrail(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "2000"})  # wide: no cell folds across lines


def assert_shown_safely(result: Result, *values: str) -> str:
    """Exit 0 without an exception, no hidden character printed, each value present as its visible escape."""
    assert result.exit_code == 0 and result.exception is None, (repr(result.exception), result.output)
    printed = result.output
    raw = [c for c in HIDDEN if c in printed]
    assert not raw, f"raw {raw!r} printed"
    for value in values:
        assert safe_text.visible(value) in printed, safe_text.visible(value)
    return printed


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key deletion and a forced secret deletion by the hostile session (both fire), a decrypt with a
    hostile encryption context, and a decrypt by a user whose name is matplotlib mathtext. The outbox holds
    the two alerts, the first with a hostile SNS error recorded."""
    trail = {"userIdentity": IDENTITY, "userAgent": USER_AGENT, "sourceIPAddress": SOURCE_IP}
    specs = [
        EventSpec(base="kms_schedule_key_deletion", at=AT, overrides=trail),
        EventSpec(
            base="secrets_delete_secret",
            at=AT + dt.timedelta(minutes=5),
            overrides={**trail, "requestParameters": {"secretId": SECRET, "forceDeleteWithoutRecovery": True}},
        ),
        EventSpec(
            base="kms_decrypt",
            at=AT + dt.timedelta(minutes=7),
            overrides={**trail, "requestParameters": {"encryptionContext": {"SecretARN": CONTEXT_VALUE}}},
        ),
        EventSpec(
            base="kms_decrypt",
            at=AT + dt.timedelta(minutes=9),
            overrides={"userIdentity": {"type": "IAMUser", "arn": MATHTEXT_USER, "accountId": "111122223333"}},
        ),
    ]
    records = cases.expand_events(specs, key="hostile", default_start=AT)
    path = tmp_path_factory.mktemp("hostile") / "lake"
    commit_table(path, events.normalize_many(records, source_object=SOURCE_OBJECT), source=SOURCE_OBJECT)
    alerts = detect.run_detections(path, AT.replace(minute=0), AT.replace(minute=0) + dt.timedelta(hours=1))
    assert [a.detection_id for a in alerts] == ["kms_key_deletion_or_disable", "secrets_deletion"]
    outbox.enqueue(path, alerts, now=NOW)
    with outbox.Outbox.open(path) as box:
        box.record_failures({alerts[0].alert_id: LAST_ERROR}, now=NOW)
    return path


def _alerts(lake: Path) -> list[Alert]:
    with outbox.Outbox.open(lake, create=False) as box:
        return [entry.alert for entry in box.entries()]


# -- detect ----------------------------------------------------------------------------------------


def test_detect_table_prints_escapes_not_control_bytes(hostile_lake: Path) -> None:
    # Before: the session's ESC and NUL bytes and the secret's U+0085 went to the terminal as they were.
    assert_shown_safely(keytrail("detect", "--lake", str(hostile_lake), *WINDOW), SESSION, "prod/db\x85[/bold]")


def test_detect_json_holds_the_exact_values_as_json_escapes(hostile_lake: Path) -> None:
    result = keytrail("detect", "--lake", str(hostile_lake), *WINDOW, "--format", "json")
    assert_shown_safely(result)
    # Split on "\n" only: a raw U+0085 or U+2028 inside a line used to split it for str.splitlines readers.
    assert result.stdout.splitlines() == result.stdout.rstrip("\n").split("\n")
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    deletion, secret = alerts
    assert deletion["principal_arn"] == PRINCIPAL and deletion["context"]["user_agent"] == USER_AGENT
    assert deletion["context"]["source_ips"] == [SOURCE_IP]
    assert secret["resource_arn"] == SECRET


# -- alerts ----------------------------------------------------------------------------------------


def test_alerts_list_survives_markup_in_a_principal(hostile_lake: Path) -> None:
    # Before: MarkupError ("closing tag '[/bold]' ... doesn't match any open tag"), exit 1, nothing printed.
    printed = assert_shown_safely(keytrail("alerts", "list", "--lake", str(hostile_lake)), SESSION, LAST_ERROR)
    assert printed.count(safe_text.visible(SESSION)) == 2


def test_alerts_list_json_holds_the_exact_values(hostile_lake: Path) -> None:
    result = keytrail("alerts", "list", "--lake", str(hostile_lake), "--format", "json")
    assert_shown_safely(result)
    listed = [json.loads(line) for line in result.stdout.split("\n") if line]
    assert [a["principal_arn"] for a in listed] == [PRINCIPAL, PRINCIPAL]
    assert listed[0]["outbox"]["last_error"] == LAST_ERROR


def test_alerts_show_prints_the_alert_and_its_history_safely(hostile_lake: Path) -> None:
    alert_id = _alerts(hostile_lake)[0].alert_id
    # Before: MarkupError on the history's SNS error; the JSON printed U+202E raw.
    printed = assert_shown_safely(keytrail("alerts", "show", alert_id[:12], "--lake", str(hostile_lake)), LAST_ERROR)
    assert json.dumps(USER_AGENT) in printed  # the JSON view, with JSON escapes


def test_an_error_quoting_hostile_input_is_escaped(tmp_path: Path) -> None:
    # fail() escaped markup but printed the ESC byte of a quoted path as it was.
    missing = tmp_path / "[/bold]\x1b[2J"
    result = keytrail("detect", "--lake", str(missing), *WINDOW)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "\x1b" not in result.output and "[/bold]\\x1b[2J not found" in result.output


def test_sns_subject_is_printable_ascii_in_the_usual_format(hostile_lake: Path) -> None:
    deletion, secret = _alerts(hostile_lake)
    assert subject(deletion) == "[CRITICAL] KMS key scheduled for deletion or disabled: [/bold]x?[31m? on key/1234abcd"
    # Before: U+0085, U+2028 and U+202E went through (only C0 controls were replaced).
    spaced = dataclasses.replace(
        secret,
        title="Secret\u2028deleted\u202e",
        principal_arn=f"arn:aws:sts::111122223333:assumed-role/{ROLE}/alice\x85smith",
    )
    assert subject(spaced) == "[HIGH] Secret deleted?: alice smith on prod/db [/bold]"
    long = dataclasses.replace(spaced, title="Secret deleted\u2028" * 12)
    for alert in (deletion, secret, spaced, long):
        text = subject(alert)
        assert len(text) <= MAX_SUBJECT_CHARS and all(" " <= c <= "~" for c in text), text
    assert subject(long).endswith("...")


# -- sql and investigations ------------------------------------------------------------------------


def test_sql_table_prints_no_emoji_and_no_control_bytes(hostile_lake: Path) -> None:
    sql = "SELECT principal_arn, user_agent, source_ip, secret_id, encryption_context, source_object FROM events"
    # Before: `:secret:` became ㊙ and ESC, NUL, U+0085, U+2028, U+202E reached the terminal.
    printed = assert_shown_safely(
        keytrail("sql", "--lake", str(hostile_lake), sql),
        PRINCIPAL,
        USER_AGENT,
        SOURCE_IP,
        SECRET,
        f"SecretARN={CONTEXT_VALUE}",
        SOURCE_OBJECT,
    )
    assert ":secret:prod/db" in printed


def test_sql_json_and_csv_keep_the_values(hostile_lake: Path) -> None:
    sql = "SELECT user_agent, secret_id FROM events WHERE secret_id IS NOT NULL"
    as_json = keytrail("sql", "--lake", str(hostile_lake), sql, "--format", "json")
    assert_shown_safely(as_json)
    assert [json.loads(line) for line in as_json.stdout.split("\n") if line] == [
        {"user_agent": USER_AGENT, "secret_id": SECRET}
    ]
    # CSV is a data file, not terminal text: the values stay verbatim.
    as_csv = keytrail("sql", "--lake", str(hostile_lake), sql, "--format", "csv")
    assert as_csv.exit_code == 0 and SECRET in as_csv.stdout and USER_AGENT in as_csv.stdout


def test_query_run_tables_print_escapes(hostile_lake: Path) -> None:
    lake = str(hostile_lake)
    assert_shown_safely(keytrail("query", "run", "context_values", "--lake", lake, *WINDOW), CONTEXT_VALUE, PRINCIPAL)
    alert_id = _alerts(hostile_lake)[0].alert_id
    assert_shown_safely(
        keytrail("query", "run", "alert_evidence", "--lake", lake, "--param", f"alert_id={alert_id[:12]}"),
        PRINCIPAL,
        USER_AGENT,
        SOURCE_IP,
    )


def test_query_show_example_from_the_lake_prints_escapes(hostile_lake: Path) -> None:
    assert_shown_safely(keytrail("query", "show", "principal_activity", "--lake", str(hostile_lake)))


# -- report ----------------------------------------------------------------------------------------


def test_report_html_shows_escapes_and_draws_hostile_labels(hostile_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    # Before: raw ESC/NUL/U+0085/U+202E in the page; a `$...$` principal made matplotlib raise while drawing.
    result = keytrail("report", "--lake", str(hostile_lake), *WINDOW, "--out", str(out))
    assert_shown_safely(result)
    page = out.read_text(encoding="utf-8")
    assert not [c for c in HIDDEN if c in page]
    for value in (PRINCIPAL, USER_AGENT, SECRET):
        assert safe_text.html_text(value) in page


# -- ingest ----------------------------------------------------------------------------------------


def test_ingest_summary_with_markup_in_a_file_name(tmp_path: Path) -> None:
    trail = tmp_path / "trail"
    key = log_key(dt.date(2024, 5, 1), "[/bold]x\x1b[31m")
    write_local(trail, key, log_bytes([record("e-1", "2024-05-01T00:00:00Z", userAgent=USER_AGENT)]))
    result = keytrail("ingest", str(trail), "--lake", str(tmp_path / "lake"))
    printed = assert_shown_safely(result)
    assert "events kept" in printed


def test_printing_modules_make_consoles_only_through_the_factory() -> None:
    # A bare Console() turns `:secret:` into an emoji: the CLI, the demo and the flows use make_console.
    root = Path(__file__).resolve().parent.parent
    modules = [*(root / "pipeline" / "cli").glob("*.py"), root / "pipeline" / "demo.py", *(root / "flows").glob("*.py")]
    bare = [str(p.relative_to(root)) for p in modules if p.name != "common.py" and "Console(" in p.read_text()]
    assert len(modules) > 10 and bare == []
