-- How many distinct encryption-context values each key saw per context key: a tenant id with thousands of
-- values is normal for a multi-tenant service, a sudden jump is scanning (kms_context_scanning's ground).
WITH pairs AS (
    SELECT
        key_arn AS key,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
        unnest(map_entries(encryption_context)) AS pair
    FROM events
    WHERE event_time >= $since
      AND audited_service(event_source)
      AND event_time < $until
      AND encryption_context IS NOT NULL
      AND key_arn IS NOT NULL
)

SELECT
    key,
    pair.key AS context_key,
    count(DISTINCT pair.value) AS distinct_values,
    count(DISTINCT principal) AS principals,
    count(*) AS calls
FROM pairs
GROUP BY ALL
ORDER BY distinct_values DESC, key, context_key
LIMIT $limit
