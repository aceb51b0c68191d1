-- Calls refused by an authorization check, grouped by who, from where, what and on which resource. A burst
-- of denials across many keys or secrets is credential probing; a steady single denial is usually a
-- misconfigured policy. The denial codes are a parameter because services spell them differently.
WITH denied AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND list_contains($error_codes, error_code)
      AND ($principal = ''
           OR $principal IN (principal_arn, session_issuer_arn, session_issuer_name, principal_name, invoked_by))
)

SELECT
    actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
    source_ip,
    event_source,
    event_name,
    coalesce(key_arn, key_id, secret_id) AS resource,
    error_code,
    count(*) AS event_count,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    any_value(error_message) AS sample_error_message
FROM denied
GROUP BY ALL
ORDER BY event_count DESC, first_seen, principal NULLS FIRST
LIMIT $limit
