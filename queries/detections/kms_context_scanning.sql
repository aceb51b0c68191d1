-- Why: an encryption context names whose data a ciphertext belongs to (tenant, user, order, secret ARN).
-- An application that suddenly decrypts with far more distinct values of a context key than it ever did -
-- most of them values it never used - is walking through other people's data ("user A's data decrypted as
-- user B", T1530), or an attacker is bulk-reading SSM parameters / secrets through KMS. Counted per
-- (principal, key, context key) and $window bucket, against the principal's own lookback: the most distinct
-- values it ever used in one bucket, and the set of values it already knew. A new tenant or two is
-- onboarding; a nightly run over the same tenants as every night uses no new values; both stay quiet.
-- Several context keys scanned together (SecretARN + SecretVersionId) make one finding, not one per key.
-- Each bucket is judged with its own lookback [bucket - lookback, bucket), as the scheduled run at its end
-- would: values a long run saw in its first hours are known in its later hours.
WITH calls AS NOT MATERIALIZED (
    SELECT
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        event_id,
        event_time,
        time_bucket($window, event_time) AS bucket,
        encryption_context
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      -- reads a service makes for the caller that another detection already sees first-hand
      AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
      AND encryption_context IS NOT NULL
      AND caller_arn(principal_arn, session_issuer_arn) IS NOT NULL
      AND event_time >= $baseline_start
      AND event_time < $until
),

recent_pairs AS (  -- one row per recent call and context key
    SELECT c.* EXCLUDE (encryption_context), e.key AS context_key, e.value AS context_value
    FROM calls AS c, unnest(map_entries(c.encryption_context)) AS u(e)
    WHERE c.bucket >= time_bucket($window, $since)
      AND NOT list_contains($ignored_context_keys, e.key)
),

candidates AS (  -- recent buckets with enough distinct values to be scanning at all; usually none
    SELECT principal_arn, key_arn, context_key, bucket
    FROM recent_pairs
    GROUP BY principal_arn, key_arn, context_key, bucket
    HAVING count(DISTINCT context_value) >= $min_distinct_values
),

history_values AS (  -- the distinct values of the candidates' context keys per bucket, for their principal and key
    SELECT DISTINCT c.principal_arn, c.key_arn, c.bucket, e.key AS context_key, e.value AS context_value
    FROM calls AS c
    SEMI JOIN (SELECT DISTINCT principal_arn, key_arn FROM candidates) AS k USING (principal_arn, key_arn),
        unnest(map_entries(c.encryption_context)) AS u(e)
    WHERE c.bucket < (SELECT max(bucket) FROM candidates)
      AND e.key IN (SELECT context_key FROM candidates)
),

known_values AS (  -- per candidate bucket: the values already used in its lookback [bucket - lookback, bucket)
    SELECT DISTINCT c.principal_arn, c.key_arn, c.context_key, c.bucket, h.context_value
    FROM candidates AS c
    JOIN history_values AS h
        ON h.principal_arn = c.principal_arn
        AND h.key_arn = c.key_arn
        AND h.context_key = c.context_key
        AND h.bucket < c.bucket
        AND h.bucket >= c.bucket - $lookback
),

baseline AS (  -- per candidate bucket: the most distinct values the principal used in one bucket of its lookback
    SELECT c.principal_arn, c.key_arn, c.context_key, c.bucket, max(h.distinct_values) AS baseline_max_distinct
    FROM candidates AS c
    JOIN (
        SELECT principal_arn, key_arn, context_key, bucket, count(*) AS distinct_values
        FROM history_values
        GROUP BY principal_arn, key_arn, context_key, bucket
    ) AS h
        ON h.principal_arn = c.principal_arn
        AND h.key_arn = c.key_arn
        AND h.context_key = c.context_key
        AND h.bucket < c.bucket
        AND h.bucket >= c.bucket - $lookback
    GROUP BY c.principal_arn, c.key_arn, c.context_key, c.bucket
),

recent AS (
    SELECT
        p.principal_arn,
        p.key_arn,
        p.context_key,
        p.bucket,
        any_value(p.recipient_account_id) AS account_id,
        any_value(p.aws_region) AS region,
        min(p.event_time) AS first_seen,
        max(p.event_time) AS last_seen,
        count(DISTINCT p.event_id) AS calls,
        count(DISTINCT p.context_value) AS distinct_values,
        count(DISTINCT p.context_value) FILTER (WHERE k.context_value IS NULL) AS new_values,
        list_sort(list(DISTINCT p.context_value) FILTER (WHERE k.context_value IS NULL))[:$max_listed]
            AS sample_new_values
    FROM recent_pairs AS p
    SEMI JOIN candidates AS c USING (principal_arn, key_arn, context_key, bucket)
    LEFT JOIN known_values AS k USING (principal_arn, key_arn, context_key, bucket, context_value)
    GROUP BY p.principal_arn, p.key_arn, p.context_key, p.bucket
),

scanning AS (  -- buckets over every threshold, per context key
    SELECT r.*, coalesce(b.baseline_max_distinct, 0) AS baseline_max_distinct
    FROM recent AS r
    LEFT JOIN baseline AS b USING (principal_arn, key_arn, context_key, bucket)
    WHERE r.distinct_values >= $min_distinct_values
      AND r.new_values >= $min_new_values
      AND r.distinct_values > $baseline_factor * coalesce(b.baseline_max_distinct, 0)
),

one_per_bucket AS (  -- one finding per principal, key and bucket: the context key with the most new values
    SELECT
        *,
        row_number() OVER by_bucket AS pick,
        list_sort(list(context_key) OVER by_bucket) AS scanned_context_keys
    FROM scanning
    WINDOW by_bucket AS (
        PARTITION BY principal_arn, key_arn, bucket
        ORDER BY new_values DESC, context_key
        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
    )
)

SELECT
    principal_arn,
    key_arn AS resource_arn,
    account_id,
    region,
    context_key,
    scanned_context_keys,
    first_seen,
    last_seen,
    calls AS event_count,
    bucket AS bucket_start,
    distinct_values,
    new_values,
    baseline_max_distinct,
    sample_new_values
FROM one_per_bucket
WHERE pick = 1
ORDER BY first_seen
