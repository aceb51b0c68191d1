"""A pytest plugin for the tests that run Prefect flows: one Prefect test harness per worker process.

Load it from a test module with `pytest_plugins = ["prefect_fixtures"]` (a plugin is registered once, so the
session fixture starts once however many modules ask). Only those modules pay the ~10-12 s server start, and
marking them `xdist_group("prefect")` puts them on one worker under `pytest -n 2 --dist loadgroup`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (SQLite) for the session, with the flow-run heartbeat off.

    The heartbeat thread costs ~1 s per flow run, and no environment variable can turn it off.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=90),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield
