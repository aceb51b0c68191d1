"""The library's log lines (`pipeline.*`: counts per step, quarantines, publishing) in the Prefect run logs.

`PREFECT_LOGGING_EXTRA_LOGGERS=pipeline` (set by `keytrail serve` and `keytrail demo` before prefect is
imported) attaches Prefect's API handler to the `pipeline` logger but leaves its level to the root logger
(WARNING), which would drop the INFO lines; each flow calls `route_library_logs()` first.
"""

from __future__ import annotations

import logging

from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS, PREFECT_LOGGING_LEVEL

LIBRARY_LOGGER = "pipeline"


def route_library_logs() -> None:
    """Give the `pipeline` logger Prefect's level when it is an extra logger and nobody set a level for it."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    if LIBRARY_LOGGER in PREFECT_LOGGING_EXTRA_LOGGERS.value() and logger.level == logging.NOTSET:
        logger.setLevel(PREFECT_LOGGING_LEVEL.value())
