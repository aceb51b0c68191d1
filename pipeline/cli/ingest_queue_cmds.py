"""`keytrail ingest sqs://QUEUE` (or `--queue QUEUE`): drain S3 event notifications into the lake.

`ingest_cmds.ingest_command` declares the options below and hands over here when given a queue. Exit codes
add one to `keytrail ingest`'s: 4 = some messages failed and were left on the queue (retried later; SQS moves
one that keeps failing to the dead-letter queue), shown in the failures table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from pipeline import aws, lake, safe_text, sqs_queue
from pipeline.cli.common import fail, make_console
from pipeline.ingest import IngestReport
from pipeline.ingest_failures import RunFault
from pipeline.queue_ingest import drain
from pipeline.queue_report import DrainOptions, QueueReport
from pipeline.settings import Settings
from pipeline.sqs_queue import QueueError

EXIT_QUARANTINED = 3
EXIT_MESSAGES_FAILED = 4

QueueOption = Annotated[
    str | None,
    typer.Option(
        "--queue",
        help="Drain this SQS queue of S3 event notifications instead of listing a SOURCE (URL or name).",
        show_default=False,
    ),
]
BatchOption = Annotated[
    int, typer.Option("--batch-messages", help="Queue: messages per lake commit (bounds memory).", min=1)
]
WaitOption = Annotated[int, typer.Option("--wait-seconds", help="Queue: long-poll wait (0-20 s).", min=0, max=20)]
VisibilityOption = Annotated[
    int, typer.Option("--visibility-timeout", help="Queue: seconds a batch stays hidden (extended while working).")
]
RetryOption = Annotated[int, typer.Option("--retry-delay", help="Queue: seconds before a failed message is retried.")]
MaxReceivesOption = Annotated[
    int, typer.Option("--max-receives", help="Queue: report a message failing this many receives as poison.", min=1)
]
MaxMessagesOption = Annotated[
    int | None, typer.Option("--max-messages", help="Queue: stop after this many messages (default: until empty).")
]
FollowOption = Annotated[bool, typer.Option("--follow", help="Queue: keep polling when it is empty (Ctrl-C stops).")]

QUEUE_HELP = (
    "\n\nWith sqs://QUEUE (or --queue QUEUE) ingest is driven by S3 event notifications instead: S3 -> SQS, "
    "S3 -> SNS -> SQS and S3 -> EventBridge -> SQS messages all work. QUEUE is the queue URL (scheme optional), "
    "ACCOUNT/NAME or NAME. Messages are deleted only after their batch is committed; keep a daily listing run "
    "over recent days as the backstop for lost notifications. Exit code 4: some messages failed and were "
    "left on the queue.\n\n"
    "Example: keytrail ingest sqs://sqs.us-east-1.amazonaws.com/123456789012/trail-events --lake ./lake"
)


def _summary(report: QueueReport) -> Table:
    """The queue's side; the objects and events are in ingest's own summary, printed after it."""
    table = Table(title=f"notifications from {safe_text.markup(report.queue)}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, int]] = [
        ("messages received", report.messages_received),
        ("messages deleted (committed)", report.messages_deleted),
        ("failed receives (message left on the queue)", report.messages_failed),
        ("  of which poison (at --max-receives or more)", report.messages_poison),
        ("test events / SNS confirmations", report.control_messages),
        *((f"messages via {shape}", count) for shape, count in sorted(report.shapes.items())),
        ("objects notified", report.objects_notified),
        ("objects named twice in a batch", report.objects_repeated),
        *((f"skipped: {reason}", count) for reason, count in sorted(report.skipped.items())),
        ("batches committed", report.batches),
    ]
    for name, value in rows:
        failed = "failed" in name or "poison" in name
        table.add_row(name, f"{value:,}", style="red" if failed and value else None)
    return table


def _failures(report: QueueReport) -> Table:
    table = Table(title="messages that failed (still on the queue, or moved to its dead-letter queue)")
    for column in ("message id", "receives", "reason"):
        table.add_column(column, overflow="fold")
    for failure in report.failures[-20:]:
        table.add_row(failure.message_id, str(failure.receive_count), safe_text.terminal(failure.reason))
    return table


def _aws_error(exc: Exception, queue: str) -> str:
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, then rerun"
    return f"{queue}: cannot reach AWS ({exc}); check --endpoint-url / network, then rerun (nothing was deleted)"


def _advice(report: QueueReport, console: Console) -> None:
    if report.dead_letter_arn is None:
        console.print(
            "[yellow]the queue has no redrive policy: a message that keeps failing stays on it; give it a "
            "dead-letter queue (RedrivePolicy maxReceiveCount) to set such messages aside"
        )
    elif report.messages_poison:
        console.print(
            f"[yellow]messages that keep failing move to {safe_text.markup(report.dead_letter_arn)}: inspect them "
            "there and move them back (aws sqs start-message-move-task) once the cause is fixed"
        )


def run_queue_ingest(
    queue: str,
    lake_path: Path,
    *,
    settings: Settings,
    endpoint_url: str | None,
    workers: int,
    options: DrainOptions,
    print_ingest: Callable[[IngestReport, Console], None],
) -> None:
    """The queue side of `keytrail ingest`: drain with a progress display, print the summaries (the queue's, then
    `print_ingest` of the ingest runs: the same tables a listing run prints), exit."""
    console = make_console(stderr=True)
    try:
        options.check()
        ref = sqs_queue.parse_queue_ref(queue)
    except (ValueError, QueueError) as exc:
        raise fail(console, str(exc), 2) from None
    endpoint = endpoint_url or settings.endpoint_url
    sqs = aws.client("sqs", endpoint_url=endpoint, region=ref.region or settings.region)
    s3 = aws.client("s3", endpoint_url=endpoint, region=settings.region)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]queue[/bold] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("connecting", total=None)

        def on_batch(report: QueueReport) -> None:
            bar.update(
                task,
                description=(
                    f"{report.messages_received:,} received, {report.messages_deleted:,} deleted, "
                    f"{report.messages_failed:,} failed; {report.ingest.events_kept:,} events kept"
                ),
            )

        def progress(done: int, total: int, done_bytes: int, total_bytes: int) -> None:
            bar.update(task, completed=done_bytes, total=max(total_bytes, 1))

        try:
            resolved = sqs_queue.open_queue(sqs, ref)
            bar.update(task, description=f"polling {safe_text.markup(resolved.url)}")
            report = drain(
                resolved,
                lake_path,
                sqs_client=sqs,
                s3_client=s3,
                clock=lambda: dt.datetime.now(dt.UTC),
                options=options,
                event_sources=settings.event_sources,
                workers=workers,
                progress=progress,
                on_batch=on_batch,
            )
        except (QueueError, RunFault) as exc:
            raise fail(console, safe_text.visible(exc)) from None
        except (BotoCoreError, ClientError) as exc:
            raise fail(console, safe_text.visible(_aws_error(exc, queue))) from None
    out = make_console()
    out.print(_summary(report))
    print_ingest(report.ingest, out)
    _advice(report, out)
    if report.messages_received == 0:
        out.print(
            "[yellow]the queue was empty: check that the trail bucket sends s3:ObjectCreated:* notifications to it"
        )
    if report.failures:
        out.print(_failures(report))
        raise typer.Exit(EXIT_MESSAGES_FAILED)
    if report.ingest.quarantined_anything:
        out.print(f"[yellow]something was quarantined: see {safe_text.markup(lake.quarantine_dir(lake_path))}")
        raise typer.Exit(EXIT_QUARANTINED)
