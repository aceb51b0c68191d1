-- Which encryption-context values each principal used with a key, and when each was first and last seen.
-- Encryption context is the tenant/record binding of KMS calls: a principal using values it never used
-- before (or another tenant's) is the "user A's data decrypted as user B" question. Empty key or
-- principal means all.
WITH context_events AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND event_source = 'kms.amazonaws.com'
      AND encryption_context IS NOT NULL
      AND ($key = '' OR $key IN (key_arn, key_id))
      AND ($principal = ''
           OR $principal IN (principal_arn, session_issuer_arn, session_issuer_name, principal_name, invoked_by))
),

pairs AS (
    SELECT
        coalesce(key_arn, key_id) AS key,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
        unnest(map_entries(encryption_context)) AS pair,
        event_name,
        error_code,
        event_time
    FROM context_events
)

SELECT
    key,
    principal,
    pair.key AS context_key,
    pair.value AS context_value,
    count(*) AS event_count,
    count(error_code) AS error_count,
    list_sort(list_distinct(list(event_name))) AS operations,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM pairs
GROUP BY ALL
ORDER BY key NULLS FIRST, principal NULLS FIRST, context_key, first_seen, context_value
LIMIT $limit
