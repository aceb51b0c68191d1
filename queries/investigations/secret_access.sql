-- Who read this secret, and from where. A secret is named by ARN or by name (ARNs end in a random
-- 6-character suffix, so names are compared without it), and BatchGetSecretValue reads count for every
-- secret they list. One row per caller, source IP, user agent, VPC endpoint and outcome.
WITH secret_events AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($operations, event_name)
      AND len(list_filter(
          coalesce(secret_ids, [secret_id]), lambda s: s = $secret OR secret_name(s) = secret_name($secret)
      )) > 0
)

SELECT
    actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
    event_name,
    coalesce(error_code, 'ok') AS outcome,
    source_ip,
    user_agent,
    vpc_endpoint_id,
    count(*) AS event_count,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM secret_events
GROUP BY ALL
ORDER BY first_seen, principal NULLS FIRST
