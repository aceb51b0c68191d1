"""The `keytrail` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="keytrail",
    help="Analytics for AWS KMS and Secrets Manager audit trails: CloudTrail -> Parquet lake -> detections.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from pipeline import __version__

        typer.echo(f"keytrail {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """keytrail: CloudTrail KMS + Secrets Manager events -> Parquet lake -> DuckDB detections -> SNS alerts.

    Example: keytrail demo
    """


def _register() -> None:
    # Explicit registration (no import side effects): each module adds its commands to `app`.
    from pipeline.cli import (
        alerts_cmds,
        backtest_cmds,
        detect_cmds,
        ingest_cmds,
        names_cmds,
        query_cmds,
        report_cmds,
        rollups_cmds,
        run_cmds,
        simulate_cmds,
        tuning_cmds,
        verify_cmds,
    )

    ingest_cmds.register(app)
    rollups_cmds.register(app)
    alerts_cmds.register(app)
    detect_cmds.register(app)
    backtest_cmds.register(app)
    query_cmds.register(app)
    report_cmds.register(app)
    simulate_cmds.register(app)
    run_cmds.register(app)
    verify_cmds.register(app)
    tuning_cmds.register(app)
    names_cmds.register(app)


_register()


def main() -> None:
    app()
