-- Why: applications call KMS with a fixed encryption-context shape (the same context keys every time), and
-- key policies / grants often rely on it (kms:EncryptionContext conditions). A call whose set of context
-- KEYS departs from what the key has always seen means either code talking to the key that is not the
-- application (stolen credentials replaying ciphertexts without context, probing with new keys, T1552 /
-- T1078), or a deployment that silently changed the binding between data and context (a data-separation
-- bug). The established set is the principal's own shapes on the key when it has enough history there, else
-- the key's shapes across all principals (a new replica of the same app is fine). Keys that never had a
-- context stay quiet: there is no schema to break. Only successful calls count. Each $window bucket is judged
-- with the shapes of its own lookback [bucket - lookback, bucket), as the scheduled run at its end would;
-- the lookback and the run's shape counts come from the hourly rollups (`hourly`: one row per call shape); raw
-- events are read only for the calls of shapes that could break (usually none).
WITH calls AS NOT MATERIALIZED (  -- the run's raw calls, read only for the judged shapes' (breaks; streamed, not held)
    SELECT
        named_caller(caller_arn(principal_arn, session_issuer_arn), principal_type, principal_account_id) AS principal_arn,
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        event_name,
        source_ip,
        event_time,
        time_bucket($window, event_time) AS bucket,
        coalesce(list_sort(map_keys(encryption_context)), []) AS context_keys
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($context_events, event_name)
      AND error_code IS NULL
      AND named_caller(caller_arn(principal_arn, session_issuer_arn), principal_type, principal_account_id) IS NOT NULL
      AND coalesce(key_arn, key_id) IS NOT NULL
      AND event_time >= time_bucket($window, $since)
      AND event_time < $until
      -- the same span on the partition column (the UTC date of event_time): other days' files are never opened
      AND event_date >= CAST(time_bucket($window, $since) AS DATE)
      AND event_date <= CAST($until AS DATE)
),

recent_shapes AS MATERIALIZED (  -- per caller, key, shape and bucket of the run and the bucket before: its calls,
    -- from the hourly rollups (same filters; their context_keys is the same list_sort(map_keys(encryption_context)),
    -- null for none). Exact, except that a last hour cut by $until also counts its calls after $until
    SELECT
        named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,
        kms_key AS key_arn,
        coalesce(context_keys, []) AS context_keys,
        time_bucket($window, hour) AS bucket,
        sum(events) AS calls
    FROM hourly
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($context_events, event_name)
      AND error_code IS NULL
      AND named_caller(caller_arn, principal_type, caller_account_id) IS NOT NULL
      AND kms_key IS NOT NULL
      AND hour >= time_bucket($window, $since) - $window
      AND hour < $until
    GROUP BY ALL
),

judged_shapes AS (  -- shapes used in a bucket of the run often enough to be a finding at all, and not the bucket
    -- before (those lie in any lookback of the next bucket, in the caller's own shapes and the key's, so they never
    -- break it). Never fewer calls than the raw ones, so a superset of the shapes the raw calls would give: only
    -- their calls are read (breaks) and recounted (per_shape)
    SELECT r.principal_arn, r.key_arn, r.context_keys, r.bucket
    FROM recent_shapes AS r
    ANTI JOIN recent_shapes AS b
        ON b.principal_arn = r.principal_arn
        AND b.key_arn = r.key_arn
        AND b.context_keys = r.context_keys
        AND b.bucket = r.bucket - $window
    WHERE r.bucket >= time_bucket($window, $since)
      AND r.calls >= $min_events
),

shape_buckets AS (  -- the lookback side, from the hourly rollups (same filters): shapes used on the judged keys
    SELECT
        named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,
        kms_key AS key_arn,
        coalesce(context_keys, []) AS context_keys,
        time_bucket($window, hour) AS bucket,
        sum(events)::BIGINT AS calls
    FROM hourly
    SEMI JOIN (SELECT DISTINCT key_arn FROM judged_shapes) AS j ON j.key_arn = hourly.kms_key
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($context_events, event_name)
      AND error_code IS NULL
      AND named_caller(caller_arn, principal_type, caller_account_id) IS NOT NULL
      AND hour >= time_bucket($window, $since) - $lookback
      AND hour < $until
    GROUP BY ALL
),

lookback_shapes AS (  -- per judged key and bucket: the shapes used on the key in [bucket - lookback, bucket)
    SELECT j.key_arn, j.bucket, h.principal_arn, h.context_keys, sum(h.calls) AS calls
    FROM (SELECT DISTINCT key_arn, bucket FROM judged_shapes) AS j
    JOIN shape_buckets AS h USING (key_arn)
    WHERE h.bucket < j.bucket
      AND h.bucket >= j.bucket - $lookback
    GROUP BY j.key_arn, j.bucket, h.principal_arn, h.context_keys
),

key_shapes AS (  -- every shape the key saw, from anyone
    SELECT
        key_arn,
        bucket,
        sum(calls) AS key_calls,
        coalesce(sum(calls) FILTER (WHERE len(context_keys) > 0), 0) AS key_calls_with_context,
        list(DISTINCT context_keys) AS key_shapes
    FROM lookback_shapes
    GROUP BY key_arn, bucket
),

pair_shapes AS (  -- the shapes this principal used on the key
    SELECT principal_arn, key_arn, bucket, sum(calls) AS pair_calls, list(DISTINCT context_keys) AS pair_shapes
    FROM lookback_shapes
    GROUP BY principal_arn, key_arn, bucket
),

key_baseline AS (  -- keys with an established context schema (enough history, and contexts at all)
    SELECT key_arn, bucket, key_shapes
    FROM key_shapes
    WHERE key_calls >= $min_baseline_calls
      AND key_calls_with_context > 0
),

judged AS (  -- each judged shape against the principal's own shapes, or the key's for a newcomer
    SELECT
        j.principal_arn,
        j.key_arn,
        j.context_keys,
        j.bucket,
        CASE WHEN p.pair_calls >= $min_baseline_calls THEN p.pair_shapes ELSE k.key_shapes END AS shapes,
        CASE WHEN p.pair_calls >= $min_baseline_calls THEN 'principal' ELSE 'key' END AS established_by
    FROM judged_shapes AS j
    JOIN key_baseline AS k USING (key_arn, bucket)
    LEFT JOIN pair_shapes AS p USING (principal_arn, key_arn, bucket)
),

breaks AS (  -- the calls of each departing shape
    SELECT c.*, j.shapes, j.established_by
    FROM calls AS c
    JOIN judged AS j USING (principal_arn, key_arn, context_keys, bucket)
    WHERE NOT list_contains(j.shapes, j.context_keys)
),

per_shape AS (  -- each departing key set (over the volume floor: see judged_shapes)
    SELECT
        principal_arn,
        key_arn,
        bucket,
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
    GROUP BY principal_arn, key_arn, context_keys, bucket
    HAVING count(*) >= $min_events
)

-- one finding per principal, key and bucket: several departing shapes at once are one incident, paged once
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
GROUP BY principal_arn, key_arn, bucket
ORDER BY first_seen
