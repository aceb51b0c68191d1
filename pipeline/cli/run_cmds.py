"""`keytrail demo` and `keytrail serve`: the commands that run the Prefect flows.

`pipeline` never imports prefect, so the flows are imported inside the commands, after the environment
Prefect reads at import time is in place.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from pipeline import safe_text
from pipeline.cli.common import fail, make_console
from pipeline.settings import Settings

_DEMO_HELP = (
    "Run the whole pipeline on a local, simulated organization trail: no AWS account needed.\n\n"
    "Starts a local AWS endpoint (moto's server on 127.0.0.1: S3, SNS, SQS), creates the trail bucket, an SNS "
    "topic and an SQS queue subscribed to it, simulates DAYS days of CloudTrail with injected incidents, runs "
    "the Prefect flows (backfill for the history, then keytrail_pipeline for the final day), and prints the "
    "alerts next to the SNS messages the queue received. The lake stays in --lake for you to explore. "
    "Exit code 1 if the messages do not match the alerts or an incident was missed.\n\n"
    "Example: keytrail demo --lake ./demo-lake --days 8 --seed 7"
)

_SERVE_HELP = (
    "Serve the scheduled Prefect deployments from this process: keytrail-pipeline every 5 minutes (ingest new "
    "CloudTrail files from SOURCE, detect over the trailing --horizon, publish alerts) and keytrail-compact "
    "daily. Schedules need a real Prefect server: start one with `prefect server start --host 127.0.0.1` and "
    "export PREFECT_API_URL=http://127.0.0.1:4200/api first. Topic, endpoint and region come from "
    "KEYTRAIL_TOPIC_ARN, KEYTRAIL_ENDPOINT_URL, KEYTRAIL_REGION.\n\n"
    "Example: keytrail serve s3://my-org-trail --lake /data/keytrail-lake --every 5m --task-runner dask "
    "--dask-address tcp://10.0.0.5:8786"
)


def demo_command(
    lake: Annotated[
        Path,
        typer.Option(
            "--lake",
            help="Where to leave the lake: a folder (replaced if a demo made it), or s3://bucket/prefix for a lake on "
            "S3 in the local endpoint.",
        ),
    ] = Path("./demo-lake"),
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Keep the local AWS endpoint up afterwards, until Ctrl-C.")
    ] = False,
    days: Annotated[int, typer.Option("--days", min=2, max=31, help="Days of CloudTrail to simulate.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Simulation seed (same seed, same trail).")] = 7,
) -> None:
    console = make_console()
    from pipeline.demo import demo_environment

    with demo_environment():
        from flows.demo import run_demo  # imports prefect: only once the quiet, local-only environment is set

        try:
            outcome = run_demo(lake, days=days, seed=seed, keep_running=keep_running, console=console)
        except FileExistsError as exc:
            raise fail(console, str(exc), 2) from None
    if not outcome.ok:
        raise typer.Exit(1)


def serve_command(
    source: Annotated[str, typer.Argument(help="s3://bucket\\[/prefix] (or a folder) holding the CloudTrail logs.")],
    lake: Annotated[Path | None, typer.Option("--lake", help="The lake directory (default: KEYTRAIL_LAKE).")] = None,
    every: Annotated[str, typer.Option("--every", help="Pipeline interval (5m, 15m, 1h).")] = "5m",
    compact_cron: Annotated[
        str, typer.Option("--compact-cron", help="Cron (UTC) of the daily compaction.")
    ] = "30 0 * * *",
    horizon: Annotated[
        str, typer.Option("--horizon", help="How far back each run re-evaluates (late CloudTrail files).")
    ] = "2h",
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish alerts to SNS.")] = True,
    task_runner: Annotated[
        str, typer.Option("--task-runner", help="threads (this machine) or dask (needs keytrail[dask]).")
    ] = "threads",
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Dask scheduler, e.g. tcp://10.0.0.5:8786.")
    ] = None,
) -> None:
    console = make_console()
    from pipeline.times import parse_duration

    try:
        interval = parse_duration(every)
        parse_duration(horizon)
    except ValueError as exc:
        raise fail(console, str(exc), 2) from None
    if task_runner not in ("threads", "dask"):
        raise fail(console, f"--task-runner {task_runner!r}: use threads or dask", 2)
    if dask_address and task_runner != "dask":
        raise fail(console, "--dask-address needs --task-runner dask", 2)
    # The library's own log lines (pipeline.*) in the Prefect run logs; read when prefect is imported.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise fail(
            console,
            "schedules need a Prefect server (the temporary one never runs schedules): in another terminal run "
            "`prefect server start --host 127.0.0.1`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
            "and run keytrail serve again",
        )
    api_url = str(PREFECT_API_URL.value())
    if problem := _unreachable(api_url):
        raise fail(
            console,
            f"no Prefect server at {api_url} ({problem}): start one with `uv run prefect server start --host "
            "127.0.0.1` in another terminal, or point PREFECT_API_URL at yours",
        )
    from flows.serve import ServeOptions, build_deployments, serve_forever

    options = ServeOptions(
        source=source,
        lake=lake or Settings.from_env().lake,
        every=interval,
        compact_cron=compact_cron,
        horizon=horizon,
        publish=publish,
        task_runner=task_runner,
        dask_address=dask_address,
    )
    console.print(
        f"serving keytrail-pipeline every {safe_text.markup(every)} and keytrail-compact at "
        f"'{safe_text.markup(compact_cron)}' (UTC)"
    )
    serve_forever(build_deployments(options))


def _unreachable(api_url: str, timeout: float = 5.0) -> str | None:
    """Why the Prefect API at `api_url` cannot be used (its /health does not answer), or None when it can.
    Checked before serving: otherwise Prefect prints "serving..." and then a several-hundred-line traceback."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def register(app: typer.Typer) -> None:
    """Add `demo` and `serve` to the app."""
    app.command("demo", help=_DEMO_HELP)(demo_command)
    app.command("serve", help=_SERVE_HELP)(serve_command)
