-- Callers of a key or secret in the range that never called it in the lookback before the range. A new
-- reader of a production secret or a new decrypter of a data key is the first sign of a stolen credential
-- or a permission that grew too wide. The lookback is the YAML `lookback` ($baseline_start = $since - lookback).
-- Empty resource = every key and secret.
WITH resource_events AS (
    -- One row per (event, resource): BatchGetSecretValue names several secrets.
    SELECT
        event_time,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
        event_name,
        error_code,
        source_ip,
        unnest(CASE
            WHEN event_source = 'kms.amazonaws.com' THEN [coalesce(key_arn, key_id)]
            ELSE coalesce(secret_ids, [secret_id])
        END) AS resource
    FROM events
    WHERE event_time >= $baseline_start
      AND event_time < $until
),

matching AS (
    SELECT *
    FROM resource_events
    WHERE resource IS NOT NULL
      AND principal IS NOT NULL
      AND (
          $resource = ''
          OR resource = $resource
          OR resource LIKE ('%:key/' || $resource)
          -- secret ARNs end in a random 6-character suffix: compare names without it
          OR (contains(resource, ':secret:') AND secret_name(resource) = secret_name($resource))
      )
),

baseline AS (
    SELECT DISTINCT resource, principal
    FROM matching
    WHERE event_time < $since
),

current_range AS (
    SELECT *
    FROM matching
    WHERE event_time >= $since
)

SELECT
    c.resource,
    c.principal,
    count(*) AS event_count,
    count(c.error_code) AS error_count,
    list_sort(list_distinct(list(c.event_name))) AS operations,
    list_sort(list_distinct(list(c.source_ip))) AS source_ips,
    min(c.event_time) AS first_seen,
    max(c.event_time) AS last_seen
FROM current_range AS c
ANTI JOIN baseline AS b ON c.resource = b.resource AND c.principal = b.principal
GROUP BY ALL
ORDER BY first_seen, c.resource
