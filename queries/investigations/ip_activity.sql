-- Everything that came from one source IP (or AWS service name): which principals used it, for what, on
-- how many keys and secrets, and whether it was denied. An IP shared by unrelated principals, or an
-- unfamiliar IP reaching many resources, is where a leaked credential shows.
WITH ip_events AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND source_ip = $source_ip
)

SELECT
    actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
    principal_account_id,
    event_source,
    event_name,
    coalesce(error_code, 'ok') AS outcome,
    count(*) AS event_count,
    count(DISTINCT coalesce(key_arn, key_id, secret_id)) AS distinct_resources,
    list_sort(list_distinct(list(user_agent))) AS user_agents,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM ip_events
GROUP BY ALL
ORDER BY first_seen, principal NULLS FIRST, event_name, outcome
