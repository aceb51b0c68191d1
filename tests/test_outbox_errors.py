"""A damaged, read-only or full lake gives one line saying which file and what to do, never a traceback:
`alerts list|show|publish`, `detect --publish` (after printing its findings), `report`, `query run alert_evidence`.
`keytrail alerts repair` moves a damaged outbox aside and starts a fresh one. An outbox made by the previous
schema (no `failed` state) still opens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pipeline.alerting.outbox import Outbox, OutboxError, enqueue, outbox_path
from pipeline.alerting.outbox_store import outbox_error
from pipeline.cli import app
from tests.test_alerts import T0, make_alert
from tests.test_sns import _two_deletions_two_hours_apart

TOPIC = "arn:aws:sns:us-east-1:111122223333:keytrail-alerts"
NOWHERE = "http://127.0.0.1:9"  # never contacted: every command here stops at the outbox
WINDOW = ["--since", "2024-05-01T10:00:00Z", "--until", "2024-05-01T11:00:00Z"]  # one finding
DETECT = ["--detection", "kms_key_deletion_or_disable", *WINDOW]


def keytrail(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "1000", "KEYTRAIL_TOPIC_ARN": TOPIC})


def one_error_line(result: Result) -> str:
    """The command failed cleanly: exit non-zero, no traceback, exactly one `error:` line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def events_lake(lake: Path, tmp_path: Path) -> Path:
    """A lake with events: KMS key deletions at 10:15 and 12:15 (WINDOW holds the first)."""
    _two_deletions_two_hours_apart(lake, tmp_path / "trail")
    return lake


def garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an sqlite database " * 400)


def truncated(path: Path) -> None:
    """A real outbox of many pages, cut in half (a crash of the disk, a bad copy)."""
    lake = path.parent.parent
    alerts = [
        make_alert(principal_arn=f"arn:aws:iam::111122223333:user/u{i}", context={"x": "y" * 900}) for i in range(300)
    ]
    enqueue(lake, alerts, now=T0)
    size = path.stat().st_size
    assert size > 100_000 and not path.with_name("outbox.sqlite-wal").exists()  # checkpointed on close
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


DAMAGES = {"garbage": garbage, "truncated": truncated}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_outbox_is_one_line_naming_the_file_and_repair(
    events_lake: Path, damage: str, tmp_path: Path
) -> None:
    lake = events_lake
    box = outbox_path(lake)
    DAMAGES[damage](box)
    lake_flag = ["--lake", str(lake)]
    page = str(tmp_path / "report.html")
    commands = {
        "alerts list": ["alerts", "list", *lake_flag],
        "alerts show": ["alerts", "show", "abcdef", *lake_flag],
        "alerts publish": ["alerts", "publish", *lake_flag, "--topic-arn", TOPIC, "--endpoint-url", NOWHERE],
        "detect --publish": ["detect", *lake_flag, *DETECT, "--format", "json", "--publish", "--endpoint-url", NOWHERE],
        "report": ["report", *lake_flag, "--since", "2024-05-01", "--until", "2024-05-02", "--out", page],
        "query run": ["query", "run", "alert_evidence", "--param", "alert_id=abcdef", *lake_flag],
    }
    for name, command in commands.items():
        result = keytrail(*command)
        line = one_error_line(result)
        assert str(box) in line and "damaged" in line, (name, line)
        assert f"keytrail alerts repair --lake {lake}" in line and "backup" in line, (name, line)
        if name == "detect --publish":  # the findings were printed first: nothing is lost
            (finding,) = result.stdout.splitlines()
            assert '"detection_id":"kms_key_deletion_or_disable"' in finding
            assert "the 1 finding(s) printed above were not queued" in line


def test_repair_moves_the_damaged_outbox_aside_and_starts_a_fresh_one(events_lake: Path) -> None:
    lake = events_lake
    box = outbox_path(lake)
    garbage(box)
    damaged_bytes = box.read_bytes()
    repaired = keytrail("alerts", "repair", "--lake", str(lake))
    assert repaired.exit_code == 0, repaired.output
    (aside,) = [p for p in box.parent.iterdir() if p.name.startswith("outbox.sqlite.damaged-")]
    assert aside.read_bytes() == damaged_bytes
    said = " ".join(repaired.output.split())
    assert str(aside) in said and f"fresh outbox at {box}" in said and "keytrail detect" in said
    with Outbox.open(lake, create=False) as fresh:
        assert fresh.entries() == []
    assert keytrail("alerts", "list", "--lake", str(lake)).exit_code == 0

    # the advice works: detection over the window queues its findings again
    detected = keytrail("detect", "--lake", str(lake), *DETECT, "--publish", "--endpoint-url", NOWHERE)
    assert "alert outbox: 1 queued, 0 suppressed" in " ".join(detected.output.split())

    healthy = keytrail("alerts", "repair", "--lake", str(lake))
    assert healthy.exit_code == 0 and "healthy" in healthy.output
    assert len([p for p in box.parent.iterdir() if p.name.startswith("outbox.sqlite.damaged-")]) == 1
    missing = keytrail("alerts", "repair", "--lake", str(lake / "nowhere"))
    assert missing.exit_code == 0 and "nothing to repair" in missing.output


def test_a_full_disk_while_creating_the_outbox_fails_detect_after_printing_the_findings(
    events_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = sqlite3.connect

    class FullDisk:
        """A connection on a full disk: reads work, the first write fails as SQLite reports it."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            self._real = real_connect(*args, **kwargs)  # type: ignore[arg-type]

        def __getattr__(self, name: str) -> object:
            return getattr(self._real, name)

        def __setattr__(self, name: str, value: object) -> None:
            if name == "_real":
                object.__setattr__(self, name, value)
            else:
                setattr(self._real, name, value)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if not sql.lstrip().upper().startswith(("SELECT", "PRAGMA USER_VERSION")):
                raise sqlite3.OperationalError("database or disk is full")
            return self._real.execute(sql, *args)

        executescript = execute

    monkeypatch.setattr(sqlite3, "connect", FullDisk)
    result = keytrail("detect", "--lake", str(events_lake), *DETECT, "--format", "json", "--publish")
    line = one_error_line(result)
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 1
    assert "the 1 finding(s) printed above were not queued" in line
    assert str(outbox_path(events_lake)) in line and "free disk space" in line

    listed = keytrail("alerts", "list", "--lake", str(events_lake))
    assert "free disk space" in one_error_line(listed) or "no alert outbox" in one_error_line(listed)


@contextlib.contextmanager
def mounted(*commands: list[str], target: Path) -> Iterator[None]:
    """Run mount commands on `target` (root only), unmounting afterwards; skip the test where mounts are refused."""
    done = 0
    try:
        for command in commands:
            if subprocess.run(command, capture_output=True).returncode != 0:
                pytest.skip(f"cannot {' '.join(command[:3])} here (no privileges for mounts)")
            done += 1
        yield
    finally:
        if done:  # lazily: a failing command may still hold a file open there until it is collected
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=True)


def test_a_really_full_disk(tmp_path: Path) -> None:
    """The same on a real full filesystem: a 2 MB tmpfs holding the lake, filled up before detection."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    lake = tmp_path / "small-disk"
    lake.mkdir()
    with mounted(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(lake)], target=lake):
        _two_deletions_two_hours_apart(lake, tmp_path / "trail")
        filler = lake / "filler"
        with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        result = keytrail("detect", "--lake", str(lake), *DETECT, "--format", "json", "--publish")
        line = one_error_line(result)
        assert len(result.stdout.splitlines()) == 1 and "not queued" in line and "free disk space" in line
        filler.unlink()  # the advice works
        again = keytrail("detect", "--lake", str(lake), *DETECT, "--publish", "--endpoint-url", NOWHERE)
        assert "alert outbox: 1 queued, 0 suppressed" in " ".join(again.output.split())


def test_a_read_only_lake(events_lake: Path) -> None:
    """A lake mounted read-only (root ignores file modes, so for root a read-only bind mount; else chmod)."""
    enqueue(events_lake, [make_alert()], now=T0)
    if os.geteuid() == 0:
        target = str(events_lake)
        bind, remount = ["mount", "--bind", target, target], ["mount", "-o", "remount,ro,bind", target]
        read_only = mounted(bind, remount, target=events_lake)
    else:
        read_only = _chmod_read_only(events_lake)
    with read_only:
        for command in (
            ["alerts", "list", "--lake", str(events_lake)],
            ["alerts", "publish", "--lake", str(events_lake), "--endpoint-url", NOWHERE],
            ["detect", "--lake", str(events_lake), *DETECT, "--publish", "--endpoint-url", NOWHERE],
        ):
            line = one_error_line(keytrail(*command))
            assert str(outbox_path(events_lake)) in line and "read-only" in line and "permissions" in line, line


@contextlib.contextmanager
def _chmod_read_only(lake: Path) -> Iterator[None]:
    paths = [lake, *lake.rglob("*")]
    modes = {path: path.stat().st_mode for path in paths}
    for path in paths:
        path.chmod(modes[path] & ~0o222)
    try:
        yield
    finally:
        for path in reversed(paths):
            path.chmod(modes[path])


def test_an_outbox_path_that_is_a_directory(events_lake: Path) -> None:
    outbox_path(events_lake).mkdir(parents=True)
    line = one_error_line(keytrail("alerts", "publish", "--lake", str(events_lake), "--endpoint-url", NOWHERE))
    assert str(outbox_path(events_lake)) in line and "is a directory" in line


def test_library_callers_get_an_outbox_error(lake: Path) -> None:
    garbage(outbox_path(lake))
    with pytest.raises(OutboxError, match="damaged"):
        Outbox.open(lake)
    with pytest.raises(OutboxError, match="damaged"):
        enqueue(lake, [make_alert()], now=T0)


# -- the previous schema ---------------------------------------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY, detection_id TEXT NOT NULL, dedup_key TEXT NOT NULL, severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL, first_seen_s REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'suppressed')),
    alert_json TEXT NOT NULL, enqueued_at TEXT NOT NULL, sent_at TEXT, message_id TEXT,
    delivery TEXT CHECK (delivery IN ('message', 'summary')), summary_id TEXT, suppressed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX alerts_by_state ON alerts (state, severity_rank DESC, first_seen_s, alert_id);
CREATE INDEX alerts_by_dedup ON alerts (dedup_key, first_seen_s);
CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, at TEXT NOT NULL,
    event TEXT NOT NULL, detail TEXT);
CREATE INDEX history_by_alert ON history (alert_id, seq);
PRAGMA user_version = 1;
"""


def test_an_outbox_made_by_the_previous_schema_opens_and_takes_the_failed_state(lake: Path) -> None:
    alert, sent = make_alert(), make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")
    path = outbox_path(lake)
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript(_V1_SCHEMA)
    for item, state in ((alert, "pending"), (sent, "sent")):
        old.execute(
            "INSERT INTO alerts (alert_id, detection_id, dedup_key, severity, severity_rank, first_seen_s, state,"
            " alert_json, enqueued_at, attempts) VALUES (?, ?, ?, 'high', 3, ?, ?, ?, '2024-05-01T12:00:00Z', 2)",
            (item.alert_id, item.detection_id, item.effective_dedup_key(), T0.timestamp(), state, item.to_json()),
        )
    old.execute(
        "INSERT INTO history (alert_id, at, event) VALUES (?, '2024-05-01T12:00:00Z', 'queued')", (alert.alert_id,)
    )
    old.commit()
    old.close()

    with Outbox.open(lake, create=False) as box:
        assert {e.alert.alert_id: (e.state, e.attempts) for e in box.entries()} == {
            alert.alert_id: ("pending", 2),
            sent.alert_id: ("sent", 2),
        }
        box.give_up({alert.alert_id: "too big"}, now=T0)
        assert box.find(alert.alert_id).state == "failed"
        assert [h.event for h in box.history(alert.alert_id)] == ["queued", "gave up"]
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 3
    indexes = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"alerts_by_state", "alerts_by_dedup", "history_by_alert"} <= indexes
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_retry_all_and_retry_without_ids(lake: Path) -> None:
    first, second = make_alert(), make_alert(principal_arn="arn:aws:iam::111122223333:user/bob")
    enqueue(lake, [first, second], now=T0)
    with Outbox.open(lake) as box:
        box.give_up({first.alert_id: "refused", second.alert_id: "refused"}, now=T0)
    nothing = keytrail("alerts", "retry", "--lake", str(lake))
    assert nothing.exit_code == 2 and "--all" in nothing.output
    retried = keytrail("alerts", "retry", "--all", "--lake", str(lake))
    assert retried.exit_code == 0 and "2 alert(s) queued again" in retried.output
    with Outbox.open(lake) as box:
        assert box.counts() == {"pending": 2, "sent": 0, "suppressed": 0, "failed": 0, "excepted": 0}
        assert [h.event for h in box.history(first.alert_id)] == ["queued", "gave up", "retry"]


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "free disk space"),
        (sqlite3.OperationalError("database or disk is full"), "free disk space"),
        (sqlite3.OperationalError("database is locked"), "another keytrail process"),
        (sqlite3.DatabaseError("database disk image is malformed"), "keytrail alerts repair"),
        (sqlite3.OperationalError("disk I/O error"), "keytrail alerts repair"),
    ],
)
def test_each_kind_of_error_says_what_to_do(lake: Path, error: Exception, says: str) -> None:
    message = str(outbox_error(outbox_path(lake), error))
    assert str(outbox_path(lake)) in message and says in message and "\n" not in message
