-- The busiest KMS keys of the window, with how many callers used each, how many calls failed, and the
-- encryption-context keys seen: which keys carry the traffic and what their contexts look like.
SELECT
    key_arn AS key,
    count(*) AS calls,
    count(DISTINCT actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id)) AS principals,
    count(error_code) AS failed,
    list_sort(list_distinct(flatten(list(map_keys(encryption_context))))) AS context_keys
FROM events
WHERE event_time >= $since
  AND audited_service(event_source)
  AND event_time < $until
  AND key_arn IS NOT NULL
GROUP BY ALL
ORDER BY calls DESC, key
LIMIT $limit
