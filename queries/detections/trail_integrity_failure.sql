-- Why: `keytrail verify` checks every CloudTrail digest's signature and chain and every log file's hash
-- (the `integrity` table). A log file modified, deleted or moved, a digest forged or deleted, or data appended
-- after a log's gzip member means someone edited the evidence after CloudTrail delivered it (ATT&CK T1565.001,
-- T1070): every keytrail finding over those hours is in doubt. Log files no digest lists (added, or their
-- digest deleted) and digests without a signature are reported too, at a lower severity when they are all
-- there is. Judged by when the verification ran (`checked_at`), so a problem found today about last week alerts
-- today; one finding per account/region per $window bucket. The window is (since, until]: the scheduled flow
-- verifies, stamping its own end time, then detects over the window ending there, and must see what it found.
WITH problems AS (
    SELECT
        *,
        time_bucket($window, checked_at) AS bucket
    FROM integrity
    WHERE status <> 'valid'
      AND checked_at > $since
      AND checked_at <= $until
)

SELECT
    account_id,
    region,
    CASE WHEN bool_or(list_contains($tampering_statuses, status)) THEN 'critical' ELSE $other_severity END
        AS severity,
    min(checked_at) AS first_seen,
    max(checked_at) AS last_seen,
    count(*) AS event_count,
    count(*) FILTER (kind = 'digest') AS digests,
    count(*) FILTER (kind = 'log') AS log_files,
    list_sort(list(DISTINCT status)) AS statuses,
    min(period_start) AS earliest_period,
    max(period_start) AS latest_period,
    list_slice(list_sort(list(DISTINCT status || ' ' || kind || ': ' || object)), 1, $max_listed) AS objects,
    any_value(reason) AS a_reason
FROM problems
GROUP BY account_id, region, bucket
ORDER BY first_seen
