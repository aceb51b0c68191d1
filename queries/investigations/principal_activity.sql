-- What did this principal do? One row per operation, resource and outcome in the window, so a responder
-- sees the shape of the activity (what, on which key/secret, denied or not, from where) before the raw
-- events. A role ARN also matches its assumed-role sessions; a service name matches what it invoked.
WITH principal_events AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND $principal IN (principal_arn, session_issuer_arn, session_issuer_name, principal_name, invoked_by)
),

per_operation AS (
    SELECT
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
        event_source,
        event_name,
        coalesce(key_arn, key_id, secret_id) AS resource,
        coalesce(error_code, 'ok') AS outcome,
        count(*) AS event_count,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        list_sort(list_distinct(list(source_ip))) AS source_ips,
        list_sort(list_distinct(list(recipient_account_id))) AS accounts
    FROM principal_events
    GROUP BY ALL
)

SELECT *
FROM per_operation
ORDER BY first_seen, event_source, event_name, resource NULLS FIRST, outcome
LIMIT $limit
