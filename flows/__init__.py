"""Prefect flows over the `pipeline` library: thin @flow/@task wrappers that add schedules, retries and logs.

Set `PREFECT_LOGGING_EXTRA_LOGGERS=pipeline` (the `serve` and `demo` entry points do) so the library's own
log lines show up in the Prefect run logs.
"""
