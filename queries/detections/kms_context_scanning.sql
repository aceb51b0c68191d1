-- Why: an encryption context names whose data a ciphertext belongs to (tenant, user, order, secret ARN).
-- An application that suddenly decrypts with far more distinct values of a context key than it ever did -
-- most of them values it never used - is walking through other people's data ("user A's data decrypted as
-- user B", T1530), or an attacker is bulk-reading SSM parameters / secrets through KMS. Counted per
-- (principal, key, context key) and $window bucket, against the principal's own lookback: the distinct values
-- of its usual busy bucket (a high percentile, so one past scan does not hide the next), and the set of
-- values it already knew. A new tenant or two is
-- onboarding; a nightly run over the same tenants as every night uses no new values; both stay quiet.
-- Several context keys scanned together (SecretARN + SecretVersionId) make one finding, not one per key.
-- Two scales: each $window bucket is judged on the calls of the $scan_window ending with it (3 h: a scan paced
-- over two hours, or straddling a bucket boundary, is counted whole), with its own lookback
-- [bucket - lookback, start of that scan window), as the scheduled run at its end would: values a long run saw
-- in its first hours are known in its later hours. The lookback comes from the
-- hourly rollups (`hourly`), which keep up to 64 distinct values per context key, group and hour: past that a
-- principal's known values are a sample and its baseline at least 64, far above this detection's thresholds.
-- The scan windows' calls come from the rollups too, to pick the (principal, key) pairs that could be scanning
-- (an exact superset); only those pairs' raw calls (`events`) are read and counted exactly.
WITH calls AS NOT MATERIALIZED (  -- the scan windows' raw calls (read below only for the possible pairs)
    SELECT
        named_caller(caller_arn(principal_arn, session_issuer_arn), principal_type, principal_account_id) AS principal_arn,
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
      AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
      AND encryption_context IS NOT NULL
      AND named_caller(caller_arn(principal_arn, session_issuer_arn), principal_type, principal_account_id) IS NOT NULL
      AND event_time >= time_bucket($window, $since) + $window - $scan_window
      AND event_time < $until
),

rollup_calls AS NOT MATERIALIZED (  -- the same calls in the hourly rollups (same filters), from the start of the
    -- first judged bucket's lookback (or of the hour before its $scan_window) to $until
    SELECT
        named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,
        kms_key AS key_arn,
        hour,
        time_bucket($window, hour) AS bucket,
        contexts,
        contexts_overflow
    FROM hourly
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
      AND named_caller(caller_arn, principal_type, caller_account_id) IS NOT NULL
      AND hour >= time_bucket($window, $since) - greatest($lookback, $scan_window)
      AND hour < $until
),

hourly_calls AS (  -- the run's scan windows and the hour before each
    SELECT * FROM rollup_calls WHERE hour >= time_bucket($window, $since) - $scan_window
),

values_before AS (  -- the values each caller used in the hour before a bucket's $scan_window (a sample past 64):
    -- known in that bucket's lookback, so a scan window using few others cannot be scanning
    SELECT DISTINCT principal_arn, key_arn, bucket + $scan_window AS bucket, c.key AS context_key, unnest(c.values) AS context_value
    FROM (SELECT principal_arn, key_arn, bucket, unnest(contexts) AS c FROM hourly_calls)
),

possible AS (  -- (principal, key) pairs that could be candidates below, judged on the rollups alone. An exact
    -- superset: the rollup rows of a judged bucket's $scan_window hold the same calls as the raw events (and more
    -- in an hour cut by $until), so where no value list (nor key list) overflowed their union holds every
    -- distinct value and the counts below are at least the candidates' counts; a list that overflowed makes its
    -- pair possible whatever it holds.
    SELECT DISTINCT principal_arn, key_arn
    FROM (
        SELECT h.principal_arn, h.key_arn, j.bucket, c.key AS context_key, w.context_value, c.overflow OR h.contexts_overflow AS sampled
        FROM hourly_calls AS h,
            unnest(h.contexts) AS u(c),
            unnest(c.values) AS w(context_value),
            unnest(generate_series(h.bucket, h.bucket + $scan_window - $window, $window)) AS j(bucket)
        WHERE h.bucket >= time_bucket($window, $since) + $window - $scan_window
          AND NOT list_contains($ignored_context_keys, c.key)
          AND j.bucket >= time_bucket($window, $since)
          AND j.bucket < $until
    ) AS v
    LEFT JOIN values_before AS k USING (principal_arn, key_arn, bucket, context_key, context_value)
    GROUP BY principal_arn, key_arn, context_key, bucket
    HAVING bool_or(sampled)
        OR (count(DISTINCT v.context_value) >= $min_distinct_values
            AND count(DISTINCT v.context_value) FILTER (WHERE k.context_value IS NULL) >= $min_new_values)
),

call_values AS (  -- the distinct values per principal, key, context key and $window bucket of the possible pairs'
    -- raw calls (usually none are read)
    SELECT principal_arn, key_arn, bucket, pair.key AS context_key, pair.value AS context_value
    FROM (
        SELECT principal_arn, key_arn, bucket, unnest(map_entries(encryption_context)) AS pair
        FROM calls SEMI JOIN possible USING (principal_arn, key_arn)
    )
    WHERE NOT list_contains($ignored_context_keys, pair.key)
    GROUP BY ALL
),

candidates AS (  -- judged buckets whose $scan_window holds enough distinct values, enough of them new, to be
    -- scanning at all; usually none
    SELECT v.principal_arn, v.key_arn, v.context_key, j.bucket
    FROM call_values AS v, unnest(generate_series(v.bucket, v.bucket + $scan_window - $window, $window)) AS j(bucket)
    LEFT JOIN values_before AS k
        ON k.principal_arn = v.principal_arn
        AND k.key_arn = v.key_arn
        AND k.context_key = v.context_key
        AND k.bucket = j.bucket
        AND k.context_value = v.context_value
    WHERE j.bucket >= time_bucket($window, $since)
      AND j.bucket < $until
    GROUP BY v.principal_arn, v.key_arn, v.context_key, j.bucket
    HAVING count(DISTINCT v.context_value) >= $min_distinct_values
       AND count(DISTINCT v.context_value) FILTER (WHERE k.context_value IS NULL) >= $min_new_values
),

recent_pairs AS (  -- the candidates' calls: one row per call, context key and judged bucket whose $scan_window holds it
    SELECT c.* EXCLUDE (encryption_context, bucket), j.bucket, e.key AS context_key, e.value AS context_value
    FROM (SELECT * FROM calls SEMI JOIN candidates USING (principal_arn, key_arn)) AS c,
        unnest(map_entries(c.encryption_context)) AS u(e),
        unnest(generate_series(c.bucket, c.bucket + $scan_window - $window, $window)) AS j(bucket)
    WHERE NOT list_contains($ignored_context_keys, e.key)
      AND j.bucket >= time_bucket($window, $since)
      AND j.bucket < $until
),

history_contexts AS (  -- the lookback side: the candidates' rollup rows
    SELECT principal_arn, key_arn, bucket, unnest(contexts) AS c
    FROM rollup_calls
    SEMI JOIN (SELECT DISTINCT principal_arn, key_arn FROM candidates) AS k USING (principal_arn, key_arn)
    WHERE hour < (SELECT max(bucket) FROM candidates)
),

history_values AS (  -- the distinct values of the candidates' context keys per bucket, for their principal and key
    SELECT DISTINCT principal_arn, key_arn, bucket, c.key AS context_key, unnest(c.values) AS context_value
    FROM history_contexts
    WHERE c.key IN (SELECT context_key FROM candidates)
),

known_values AS (  -- per candidate bucket: the values already used in its lookback [bucket - lookback, bucket)
    SELECT DISTINCT c.principal_arn, c.key_arn, c.context_key, c.bucket, h.context_value
    FROM candidates AS c
    JOIN history_values AS h
        ON h.principal_arn = c.principal_arn
        AND h.key_arn = c.key_arn
        AND h.context_key = c.context_key
        AND h.bucket < c.bucket + $window - $scan_window
        AND h.bucket >= c.bucket - $lookback
),

baseline AS (  -- per candidate bucket: the distinct values of the principal's usual busy bucket in its lookback
    SELECT c.principal_arn, c.key_arn, c.context_key, c.bucket, quantile_disc(h.distinct_values, $baseline_quantile) AS baseline_distinct
    FROM candidates AS c
    JOIN (
        SELECT principal_arn, key_arn, context_key, bucket, count(*) AS distinct_values
        FROM history_values
        GROUP BY principal_arn, key_arn, context_key, bucket
    ) AS h
        ON h.principal_arn = c.principal_arn
        AND h.key_arn = c.key_arn
        AND h.context_key = c.context_key
        AND h.bucket < c.bucket + $window - $scan_window
        AND h.bucket >= c.bucket - $lookback
    GROUP BY c.principal_arn, c.key_arn, c.context_key, c.bucket
),

marked AS (  -- each candidate's calls, new values marked; the scan starts with its first new value
    SELECT
        p.*,
        k.context_value IS NULL AS is_new,
        min(p.event_time) FILTER (WHERE k.context_value IS NULL)
            OVER (PARTITION BY p.principal_arn, p.key_arn, p.context_key, p.bucket) AS scan_start
    FROM recent_pairs AS p
    SEMI JOIN candidates AS c USING (principal_arn, key_arn, context_key, bucket)
    LEFT JOIN known_values AS k USING (principal_arn, key_arn, context_key, bucket, context_value)
),

recent AS (
    SELECT
        principal_arn,
        key_arn,
        context_key,
        bucket,
        any_value(recipient_account_id) AS account_id,
        any_value(aws_region) AS region,
        -- the scan's start stays put while the window slides over the same scan: one alert id
        min(scan_start) AS first_seen,
        max(event_time) AS last_seen,
        count(DISTINCT event_id) FILTER (WHERE event_time >= scan_start) AS calls,
        count(DISTINCT context_value) AS distinct_values,
        count(DISTINCT context_value) FILTER (WHERE is_new) AS new_values,
        list_sort(list(DISTINCT context_value) FILTER (WHERE is_new))[:$max_listed] AS sample_new_values
    FROM marked
    GROUP BY principal_arn, key_arn, context_key, bucket
),

scanning AS (  -- buckets over every threshold, per context key
    SELECT r.*, coalesce(b.baseline_distinct, 0) AS baseline_distinct
    FROM recent AS r
    LEFT JOIN baseline AS b USING (principal_arn, key_arn, context_key, bucket)
    WHERE r.distinct_values >= $min_distinct_values
      AND r.new_values >= $min_new_values
      AND r.distinct_values > $baseline_factor * coalesce(b.baseline_distinct, 0)
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
    baseline_distinct,
    sample_new_values
FROM one_per_bucket
WHERE pick = 1
ORDER BY first_seen
