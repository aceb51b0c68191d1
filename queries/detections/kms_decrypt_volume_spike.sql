-- Why: Decrypt / GenerateDataKey / ReEncrypt hand out plaintext keys. Mass decryption is how stolen
-- credentials turn ciphertext into data (T1530/T1552), and CloudTrail Insights never sees it (read-only
-- calls). Each (principal, key) is compared with ITS OWN lookback, twice:
--   * typical level: the p-th percentile of its hourly counts over the whole lookback, idle hours counted
--     as zero (a big nightly job is a few percent of the hours, so it does not inflate this);
--   * same hour of day: its largest count at this hour (+/- hour_tolerance hours) on previous days, so a
--     scheduled job of the usual size at the usual time is normal.
-- A bucket fires only when it beats both (times their factors) and min_events. A pair with no history at
-- all fires only on new_pair_min_events (a fresh deployment ramps up; an attacker's new key user rarely
-- stays small). Buckets are aligned to $window, so overlapping reruns see the same bucket and alert id.
-- Each bucket is judged with its own lookback [bucket - lookback, bucket), as the scheduled run at its end
-- would: earlier buckets of a long run are history for later ones.
WITH calls AS (
    SELECT
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        event_name,
        source_ip,
        event_time,
        time_bucket($window, event_time) AS bucket
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      -- reads a service makes for the caller that another detection already sees first-hand
      AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
      AND caller_arn(principal_arn, session_issuer_arn) IS NOT NULL
      AND event_time >= $baseline_start
      AND event_time < $until
),

buckets AS (
    SELECT
        principal_arn,
        key_arn,
        bucket,
        count(*) AS calls,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        any_value(recipient_account_id) AS account_id,
        any_value(aws_region) AS region,
        list_sort(list(DISTINCT event_name)) AS event_names,
        list_sort(list(DISTINCT source_ip))[:$max_listed] AS source_ips
    FROM calls
    GROUP BY principal_arn, key_arn, bucket
),

judged AS (  -- buckets of the run over the lowest floor (usually few): only these are compared with a lookback
    SELECT *
    FROM buckets
    WHERE bucket >= time_bucket($window, $since)
      AND calls >= least($min_events, $new_pair_min_events)
),

history AS (  -- each judged bucket's own lookback: the pair's buckets in [bucket - lookback, bucket)
    SELECT j.principal_arn, j.key_arn, j.bucket, h.bucket AS past_bucket, h.calls
    FROM judged AS j
    JOIN buckets AS h USING (principal_arn, key_arn)
    WHERE h.bucket < j.bucket
      AND h.bucket >= j.bucket - $lookback
),

history_ranked AS (  -- rank of each past bucket from the busiest down, per pair and judged bucket
    SELECT
        *,
        row_number() OVER lookback AS rank_from_top,
        count(*) OVER lookback AS active_buckets,
        -- every bucket since the pair first appeared in the lookback, idle ones included
        (epoch(bucket) - epoch(min(past_bucket) OVER lookback)) // epoch($window) AS total_buckets
    FROM history
    WINDOW lookback AS (PARTITION BY principal_arn, key_arn, bucket ORDER BY calls DESC
                        ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),

typical AS (  -- discrete percentile over all buckets: the k-th busiest with k = ceil((1 - q) * total)
    SELECT
        principal_arn,
        key_arn,
        bucket,
        any_value(active_buckets) AS active_buckets,
        coalesce(max(calls) FILTER (WHERE rank_from_top = ceil((1 - $baseline_quantile) * total_buckets)), 0)
            AS typical_calls
    FROM history_ranked
    GROUP BY principal_arn, key_arn, bucket
),

same_hour AS (  -- the busiest past bucket at this hour of day (circular distance: 23:00 is next to 00:00)
    SELECT principal_arn, key_arn, bucket, max(calls) AS same_hour_max
    FROM history
    WHERE least(abs(hour(bucket) - hour(past_bucket)), 24 - abs(hour(bucket) - hour(past_bucket))) <= $hour_tolerance
    GROUP BY principal_arn, key_arn, bucket
),

scored AS (
    SELECT
        j.*,
        coalesce(t.active_buckets, 0) AS active_buckets,
        coalesce(t.typical_calls, 0) AS typical_calls,
        coalesce(s.same_hour_max, 0) AS same_hour_max
    FROM judged AS j
    LEFT JOIN typical AS t USING (principal_arn, key_arn, bucket)
    LEFT JOIN same_hour AS s USING (principal_arn, key_arn, bucket)
)

SELECT
    principal_arn,
    key_arn AS resource_arn,
    account_id,
    region,
    first_seen,
    last_seen,
    calls AS event_count,
    bucket AS bucket_start,
    active_buckets AS baseline_active_buckets,
    typical_calls AS baseline_typical,
    same_hour_max AS baseline_same_hour_max,
    round(calls / greatest(typical_calls, same_hour_max, 1), 1) AS ratio_to_baseline,
    event_names,
    source_ips
FROM scored
-- "no history" only means something once the lake holds a full lookback (else: warming up, stay quiet)
WHERE (active_buckets = 0 AND calls >= $new_pair_min_events AND $history_start <= bucket - $lookback)
   OR (
       active_buckets > 0
       AND calls >= $min_events
       AND calls > $spike_factor * typical_calls
       AND calls > $same_hour_factor * same_hour_max
   )
ORDER BY first_seen
