-- Who used this KMS key, for what, with which encryption-context keys, over time. One row per time bucket,
-- principal, operation, context key set and outcome: a spike, a new caller or a new context shape shows
-- up as a new row. The key matches by ARN or key id; an alias matches the keys that calls naming it (or
-- CreateAlias) were recorded against in the window, since Decrypt records only the key ARN.
WITH wanted_keys AS (
    SELECT DISTINCT key_arn
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND key_arn IS NOT NULL
      AND (
          $key IN (key_arn, key_id)
          OR json_extract_string(request_parameters, '$.keyId') = $key
          OR json_extract_string(request_parameters, '$.aliasName') = $key
      )
),

key_events AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND event_source = 'kms.amazonaws.com'
      AND (key_arn IN (SELECT key_arn FROM wanted_keys) OR key_id = $key)
),

bucketed AS (
    SELECT
        time_bucket($bucket, event_time) AS bucket,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
        event_name,
        list_sort(map_keys(encryption_context)) AS context_keys,
        coalesce(error_code, 'ok') AS outcome,
        event_time,
        source_ip
    FROM key_events
)

SELECT
    bucket,
    principal,
    event_name,
    context_keys,
    outcome,
    count(*) AS event_count,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(DISTINCT source_ip) AS distinct_source_ips
FROM bucketed
GROUP BY ALL
ORDER BY bucket, principal NULLS FIRST, event_name, outcome
