"""`verify_trail`: the scheduled flow's integrity step. Verify the digest chains and log files of the days the
run covers, record the verdicts in the lake's integrity/ table (which the trail_integrity_failure detection
reads right after), and log the coverage line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.clients import client, s3_client_for
from pipeline import safe_text
from pipeline.integrity import keys as public_keys
from pipeline.integrity.results import Coverage
from pipeline.integrity.verify import save, verify_source
from pipeline.lake import lake_dir
from pipeline.settings import Settings
from pipeline.times import midnight


@task(name="verify-trail", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def verify_trail(source: str, lake: str, since: dt.date, until: dt.date, now: dt.datetime) -> dict[str, Any]:
    """Verify [since, until] (days) of `source`; rows are stamped `now`. A trail without keys to check it with
    (no KEYTRAIL_PUBLIC_KEYS and no cloudtrail:ListPublicKeys) is logged and skipped, never a failed run."""
    settings = Settings.from_env()
    logger = get_run_logger()
    s3 = s3_client_for(source, settings.endpoint_url, settings.region)
    try:
        if settings.public_keys:
            keys_at = settings.public_keys
            reader = s3 or (
                client("s3", settings.endpoint_url, settings.region) if keys_at.startswith("s3://") else None
            )
            keys: Any = public_keys.load(keys_at, reader)
        else:
            keys = public_keys.per_region(lambda region: client("cloudtrail", settings.endpoint_url, region),
                                          midnight(since) - dt.timedelta(days=1), now)  # fmt: skip
        report = verify_source(source, keys, client=s3, since=since, until=until, now=now, skip_unvalidated=True)
    except (public_keys.KeyFileError, BotoCoreError, ClientError) as exc:
        logger.warning("integrity not verified: %s (set KEYTRAIL_PUBLIC_KEYS or allow cloudtrail:ListPublicKeys)",
                       safe_text.visible(exc))  # fmt: skip
        return {"skipped": safe_text.visible(exc)}
    if report.unvalidated:
        logger.warning("no digest at all (log file validation off?) for %s: their log files are not verified",
                       safe_text.visible(", ".join(report.unvalidated)))  # fmt: skip
    # An s3:// lake: recorded in this machine's replica, where this flow's detect step reads it (like the outbox).
    written = save(report, Path(lake_dir(lake, settings)), now)
    coverage = Coverage.of(report.rows)
    problems = sum(row.problem for row in report.rows)
    logger.info("%s; %d digests and log files failed verification; %d objects read in %.1f s",
                coverage.line(), problems, report.objects_read, report.seconds)  # fmt: skip
    return {"coverage": coverage.line(), "verified": coverage.verified, "log_files": coverage.total,
            "problems": problems, "rows": written}  # fmt: skip
