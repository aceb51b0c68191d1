-- Why: applications call KMS with a fixed encryption-context shape (the same context keys every time), and
-- key policies / grants often rely on it (kms:EncryptionContext conditions). A call whose set of context
-- KEYS departs from what the key has always seen means either code talking to the key that is not the
-- application (stolen credentials replaying ciphertexts without context, probing with new keys, T1552 /
-- T1078), or a deployment that silently changed the binding between data and context (a data-separation
-- bug). The established set is the principal's own shapes on the key when it has enough history there, else
-- the key's shapes across all principals (a new replica of the same app is fine). Keys that never had a
-- context stay quiet: there is no schema to break. Only successful calls count.
WITH calls AS (
    SELECT
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        event_name,
        source_ip,
        event_time,
        coalesce(list_sort(map_keys(encryption_context)), []) AS context_keys
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($context_events, event_name)
      AND error_code IS NULL
      AND caller_arn(principal_arn, session_issuer_arn) IS NOT NULL
      AND coalesce(key_arn, key_id) IS NOT NULL
      AND event_time >= $baseline_start
      AND event_time < $until
),

history_shapes AS (  -- how often each principal used each shape on each key in the lookback
    SELECT principal_arn, key_arn, context_keys, count(*) AS calls
    FROM calls
    WHERE event_time < $since
    GROUP BY principal_arn, key_arn, context_keys
),

key_shapes AS (  -- every shape the key saw, from anyone
    SELECT
        key_arn,
        sum(calls) AS key_calls,
        coalesce(sum(calls) FILTER (WHERE len(context_keys) > 0), 0) AS key_calls_with_context,
        list(DISTINCT context_keys) AS key_shapes
    FROM history_shapes
    GROUP BY key_arn
),

pair_shapes AS (  -- the shapes this principal used on the key
    SELECT principal_arn, key_arn, sum(calls) AS pair_calls, list(DISTINCT context_keys) AS pair_shapes
    FROM history_shapes
    GROUP BY principal_arn, key_arn
),

key_baseline AS (  -- keys with an established context schema (enough history, and contexts at all)
    SELECT key_arn, key_shapes
    FROM key_shapes
    WHERE key_calls >= $min_baseline_calls
      AND key_calls_with_context > 0
),

judged AS (  -- each recent call against the principal's own shapes, or the key's for a newcomer
    SELECT
        r.*,
        CASE WHEN p.pair_calls >= $min_baseline_calls THEN p.pair_shapes ELSE k.key_shapes END AS shapes,
        CASE WHEN p.pair_calls >= $min_baseline_calls THEN 'principal' ELSE 'key' END AS established_by
    FROM calls AS r
    JOIN key_baseline AS k USING (key_arn)
    LEFT JOIN pair_shapes AS p USING (principal_arn, key_arn)
    WHERE r.event_time >= $since
),

breaks AS (
    SELECT * FROM judged WHERE NOT list_contains(shapes, context_keys)
),

per_shape AS (  -- each departing key set, with its own volume floor
    SELECT
        principal_arn,
        key_arn,
        any_value(recipient_account_id) AS account_id,
        any_value(aws_region) AS region,
        array_to_string(context_keys, ',') AS context_keys,
        CASE
            WHEN len(context_keys) = 0 THEN 'context_missing'
            WHEN len(list_filter(context_keys, lambda k: NOT list_contains(flatten(any_value(shapes)), k))) > 0
                THEN 'new_context_keys'
            ELSE 'different_key_set'
        END AS break_kind,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        count(*) AS event_count,
        list_transform(any_value(shapes), lambda s: array_to_string(s, ',')) AS established_shapes,
        any_value(established_by) AS established_by,
        list(DISTINCT event_name) AS event_names,
        list(DISTINCT source_ip) AS source_ips
    FROM breaks
    GROUP BY principal_arn, key_arn, context_keys
    HAVING count(*) >= $min_events
)

-- one finding per principal and key: several departing shapes at once are one incident, paged once
SELECT
    principal_arn,
    key_arn AS resource_arn,
    any_value(account_id) AS account_id,
    any_value(region) AS region,
    list_sort(list(context_keys)) AS context_keys,
    list_sort(list(DISTINCT break_kind)) AS break_kinds,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    sum(event_count)::BIGINT AS event_count,
    any_value(established_shapes) AS established_shapes,
    any_value(established_by) AS established_by,
    list_sort(list_distinct(flatten(list(event_names)))) AS event_names,
    list_sort(list_distinct(flatten(list(source_ips))))[:$max_listed] AS source_ips
FROM per_shape
GROUP BY principal_arn, key_arn
ORDER BY first_seen
