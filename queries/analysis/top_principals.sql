-- The busiest callers of the window (named as alerts name them), with how often they were refused and how
-- many keys, secrets and source IPs they used: who to look at first in the overview and the report.
WITH window_events AS (
    SELECT *, actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal
    FROM events
    WHERE event_time >= $since
      AND audited_service(event_source)
      AND event_time < $until
)

SELECT
    principal,
    count(*) AS calls,
    count(*) FILTER (list_contains($error_codes, error_code)) AS denied,
    count(DISTINCT key_arn) AS keys,
    count(DISTINCT secret_id) AS secrets,
    count(DISTINCT source_ip) AS source_ips
FROM window_events
WHERE principal IS NOT NULL
GROUP BY ALL
ORDER BY calls DESC, principal
LIMIT $limit
