"""What both benchmarks share: measuring a child process, caching corpora under bench/.data, printing.

Each measured stage runs in a fresh child process (`<script> --child <stage> ...`) so its CPU time and peak
memory are its own: the child times just the work (not interpreter start-up and imports) with
getrusage(SELF) + getrusage(CHILDREN) (worker processes are reaped before it reports), and the parent polls
/proc for the resident memory of the child's whole process tree (a worker pool's total, not one process) and
each process's own high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_DATA = BENCH / ".data"
_RESULT_MARK = "@@bench-result@@ "
_PAGE = os.sysconf("SC_PAGE_SIZE")

console = Console(highlight=False, width=max(120, Console().width))


# --- inside a child ----------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


@contextmanager
def timed_work(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Time the block (wall and CPU of this process and its reaped children) into `result`."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    yield result
    result["wall"] = time.perf_counter() - wall
    result["cpu"] = _cpu_seconds() - cpu


def report_to_parent(result: dict[str, Any]) -> None:
    """The child's last word: one marked JSON line on stdout."""
    print(_RESULT_MARK + json.dumps(result), flush=True)


def entry(main: Callable[[], None], stages: Mapping[str, Callable[..., dict[str, Any]]]) -> None:
    """The script's entry point: `main()`, or as a measured child (`--child STAGE ARG...`) one stage."""
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        stage, *args = sys.argv[2:]
        if stage not in stages:
            raise SystemExit(f"unknown stage {stage!r}; stages: {', '.join(stages)}")
        report_to_parent(stages[stage](*args))
    else:
        main()


def arguments(doc: str, example: str, events: str, quick: str) -> argparse.ArgumentParser:
    """The options both benchmarks take; each adds its own."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=f"example: {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, help=events)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="where corpora and lakes are cached")
    parser.add_argument("--skip-duckdb", action="store_true", help="leave out the DuckDB peer")
    parser.add_argument("--prepare", action="store_true", help="only build (or find) the data, measure nothing")
    return parser


# --- in the parent -------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One stage as a child process ran it."""

    name: str
    wall: float  # seconds of the measured work
    cpu: float  # CPU-seconds of the measured work (all processes of the child's tree)
    peak_rss: int  # bytes: the child's process tree at its largest (polled every 50 ms)
    max_rss: int  # bytes: the largest single process's own peak (VmHWM)
    peaks: list[int] = field(default_factory=list)  # bytes: each process's own peak, largest first
    data: dict[str, Any] = field(default_factory=dict)


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in bytes; (0, 0) if it is gone. VmHWM is its own peak since exec (unlike
    getrusage's ru_maxrss, which a child inherits from the parent it was forked from)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status.splitlines() if line[:5] in _VM}
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


_VM = ("VmRSS", "VmHWM")


def tree_memory(pid: int) -> tuple[int, dict[int, int]]:
    """Resident bytes of `pid` and all its descendants now, and each one's own peak, from /proc."""
    tree = _children_of()
    total, peaks, todo = 0, {}, [pid]
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, ()))
        rss, hwm = _memory(current)
        total += rss
        peaks[current] = hwm
    return total, peaks


def run_child(script: Path, stage: str, args: list[str], name: str | None = None) -> Measured:
    """Run `script --child stage args...`, polling its tree's memory; raise with its output if it fails."""
    command = [sys.executable, str(script), "--child", stage, *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    peak, peaks = 0, {}
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            total, now = tree_memory(process.pid)
            peak = max(peak, total)
            for pid, hwm in now.items():
                peaks[pid] = max(peaks.get(pid, 0), hwm)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(process.stdout or ()), daemon=True),
        threading.Thread(target=lambda: err.extend(process.stderr or ()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    process.wait()
    stop.set()
    poller.join()
    for reader in readers:
        reader.join()
    results = [line[len(_RESULT_MARK) :] for line in out if line.startswith(_RESULT_MARK)]
    if process.returncode != 0 or not results:
        raise RuntimeError(
            f"benchmark stage {stage!r} failed (exit {process.returncode}):\n{''.join(err)[-4000:]}"
            f"\nRe-run it alone to debug: {' '.join(command)}"
        )
    data = json.loads(results[-1])
    return Measured(
        name or stage,
        wall=data.pop("wall"),
        cpu=data.pop("cpu"),
        peak_rss=max(peak, *peaks.values(), 0),
        max_rss=max(peaks.values(), default=0),
        peaks=sorted(peaks.values(), reverse=True),
        data=data,
    )


# --- cached corpora ---------------------------------------------------------------------------------------


def cached(folder: Path, params: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Reuse `folder` when a previous build with the same `params` completed; else (re)build it.

    The marker is written last, so an interrupted build is never mistaken for a finished one.
    """
    marker = folder / ".bench-complete.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("params") == params:
            return saved["facts"]
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    facts = build(folder)
    marker.write_text(json.dumps({"params": params, "facts": facts}, indent=1))
    return facts


def simulate(out: Path, **options: Any) -> Any:
    """`pipeline.simulate.simulate` into `out` on every CPU, with a progress bar; its SimulationResult."""
    from rich.progress import Progress

    from pipeline.simulate import simulate as run

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"simulating {options['days']} day(s) into {out}", total=None)

        def progress(done: int, total: int, so_far: int) -> None:
            bar.update(task, completed=done, total=total, description=f"simulating {out.name}: {so_far:,} events")

        return run(str(out), workers=os.cpu_count() or 1, progress=progress, **options)


# --- the DuckDB peer: raw CloudTrail JSON -> the lake's columns, in SQL ----------------------------------------

# Only the fields the lake keeps; nested parts stay JSON text, as keytrail keeps them.
_TOP_TEXT = (
    "eventID", "eventTime", "eventSource", "eventName", "eventType", "eventCategory", "eventVersion", "awsRegion",
    "recipientAccountId", "sourceIPAddress", "userAgent", "vpcEndpointId", "errorCode", "errorMessage", "readOnly",
    "requestID", "sharedEventID",
)  # fmt: skip
_IDENTITY_TEXT = ("type", "arn", "principalId", "accountId", "userName", "accessKeyId", "invokedBy")
_NESTED_JSON = ("requestParameters", "responseElements", "additionalEventData", "serviceEventDetails", "resources")
_SESSION = {"sessionIssuer": {"arn": "VARCHAR", "userName": "VARCHAR"}, "attributes": {"mfaAuthenticated": "VARCHAR"}}
_STRUCTURE: dict[str, Any] = {
    "Records": [
        {
            **dict.fromkeys(_TOP_TEXT, "VARCHAR"),
            "userIdentity": {**dict.fromkeys(_IDENTITY_TEXT, "VARCHAR"), "sessionContext": _SESSION},
            **dict.fromkeys(_NESTED_JSON, "JSON"),
        }
    ]
}
JSON_STRUCTURE = json.dumps(_STRUCTURE)

# DuckDB's best hand-tuned form (read_json with a declared Records type was ~5x slower here). Parameters: $files
# (paths), $structure (JSON_STRUCTURE). Key/secret promotion is simplified (first resources[] ARN, else keyId),
# as a user's script would be.
EVENTS_FROM_JSON_SQL = """
  WITH files AS (
    SELECT filename, json_transform(json, $structure) AS doc
    FROM read_json_objects($files, format = 'unstructured', filename = true, maximum_object_size = 1073741824)
  ), records AS (
    SELECT filename, unnest(doc.Records) AS r FROM files
  )
  SELECT
    r.eventID AS event_id,
    strptime(r.eventTime[:19], '%Y-%m-%dT%H:%M:%S')::TIMESTAMPTZ AS event_time,
    strptime(r.eventTime[:19], '%Y-%m-%dT%H:%M:%S')::DATE AS event_date,
    r.eventSource AS event_source, r.eventName AS event_name, r.eventType AS event_type,
    r.eventCategory AS event_category, r.eventVersion AS event_version, r.awsRegion AS aws_region,
    r.recipientAccountId AS recipient_account_id,
    r.userIdentity.type AS principal_type, r.userIdentity.arn AS principal_arn,
    r.userIdentity.principalId AS principal_id, r.userIdentity.accountId AS principal_account_id,
    coalesce(r.userIdentity.userName, split_part(r.userIdentity.arn, ':assumed-role/', 2),
             r.userIdentity.invokedBy) AS principal_name,
    r.userIdentity.accessKeyId AS access_key_id,
    r.userIdentity.sessionContext.sessionIssuer.arn AS session_issuer_arn,
    r.userIdentity.sessionContext.sessionIssuer.userName AS session_issuer_name,
    TRY_CAST(r.userIdentity.sessionContext.attributes.mfaAuthenticated AS BOOLEAN) AS session_mfa,
    r.userIdentity.invokedBy AS invoked_by, r.sourceIPAddress AS source_ip, r.userAgent AS user_agent,
    r.vpcEndpointId AS vpc_endpoint_id, r.errorCode AS error_code, r.errorMessage AS error_message,
    TRY_CAST(r.readOnly AS BOOLEAN) AS read_only, r.requestID AS request_id, r.sharedEventID AS shared_event_id,
    coalesce(r.resources ->> '$[0].ARN', r.requestParameters ->> '$.keyId') AS key_arn,
    split_part(coalesce(r.resources ->> '$[0].ARN', r.requestParameters ->> '$.keyId'), ':key/', 2) AS key_id,
    r.requestParameters ->> '$.secretId' AS secret_id,
    TRY_CAST(r.requestParameters -> '$.secretIdList' AS VARCHAR[]) AS secret_ids,
    TRY_CAST(r.requestParameters -> '$.encryptionContext' AS MAP(VARCHAR, VARCHAR)) AS encryption_context,
    r.requestParameters::VARCHAR AS request_parameters, r.responseElements::VARCHAR AS response_elements,
    r.additionalEventData::VARCHAR AS additional_event_data,
    r.serviceEventDetails::VARCHAR AS service_event_details, r.resources::VARCHAR AS resources,
    filename AS source_object
  FROM records
  -- the sources keytrail's lake keeps by default (pipeline.events.DEFAULT_SOURCES): the same job
  WHERE r.eventSource IN ('kms.amazonaws.com', 'secretsmanager.amazonaws.com', 'cloudtrail.amazonaws.com')
"""


# --- printing -----------------------------------------------------------------------------------------------


def mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    view = Table(title=title, title_justify="left")
    for index, name in enumerate(columns):
        view.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        view.add_row(*row)
    console.print(view)


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]MISSED[/red]"
