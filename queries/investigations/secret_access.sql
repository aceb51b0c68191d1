-- Who read this secret, and from where. A secret is named by ARN or by name (ARNs end in a random
-- 6-character suffix, so names are compared without it), and BatchGetSecretValue reads count for every
-- secret they list. One row per caller, source IP, user agent, VPC endpoint and outcome.
WITH wanted AS (
    SELECT CASE
        WHEN contains($secret, ':secret:')
            THEN regexp_replace(split_part($secret, ':secret:', 2), '-[A-Za-z0-9]{6}$', '')
        ELSE $secret
    END AS secret_name
),

secret_events AS (
    SELECT e.*
    FROM events AS e, wanted AS w
    WHERE e.event_time >= $since
      AND e.event_time < $until
      AND e.event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($operations, e.event_name)
      AND len(list_filter(
          coalesce(e.secret_ids, [e.secret_id]),
          lambda s: s = $secret OR CASE
              WHEN contains(s, ':secret:')
                  THEN regexp_replace(split_part(s, ':secret:', 2), '-[A-Za-z0-9]{6}$', '')
              ELSE s
          END = w.secret_name
      )) > 0
)

SELECT
    coalesce(principal_arn, invoked_by, principal_account_id) AS principal,
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
