-- Why: InvalidCiphertextException / IncorrectKeyException mean a ciphertext was tampered with, decrypted
-- under the wrong encryption context, or tried against the wrong key. Applications get one now and then
-- (a corrupted record, a retry); a burst from one principal is somebody guessing contexts or replaying
-- stolen ciphertexts outside the application (T1552, T1110-style trial and error). Counted in a sliding
-- $window per principal; a principal that fails this often every day (a known broken job) is compared with
-- its own worst bucket in the lookback and stays quiet unless it gets much worse. One finding per principal and
-- $window bucket, judged as the scheduled run of that bucket would: the failures of the bucket (their sliding
-- window may reach into the previous bucket) against the lookback before it. All raw events: the run's failures
-- (and the $window before it), and the lookback's only when a principal bursts.
WITH failures AS (  -- the failures the judged buckets' sliding windows hold
    SELECT
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        event_name,
        error_code,
        source_ip,
        event_time
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($error_codes, error_code)
      AND error_code IS NOT NULL  -- filtered by the scan row by row (list_contains only prunes row groups)
      AND caller_arn(principal_arn, session_issuer_arn) IS NOT NULL
      AND event_time >= $since - $window
      AND event_time < $until
),

sliding AS (  -- failures in the $window ending at each failure
    SELECT
        *,
        time_bucket($window, event_time) AS bucket,
        count(*) OVER w AS in_window,
        min(event_time) OVER w AS window_first
    FROM failures
    WINDOW w AS (PARTITION BY principal_arn ORDER BY event_time RANGE BETWEEN $window PRECEDING AND CURRENT ROW)
),

bursts AS (  -- per principal and judged bucket: first full window (may start a bucket earlier) to last failure
    SELECT
        principal_arn,
        bucket,
        min(window_first) AS first_seen,
        max(event_time) AS last_seen,
        max(in_window) AS peak
    FROM sliding
    WHERE in_window >= $min_failures
      AND event_time >= $since
    GROUP BY principal_arn, bucket
),

past_failures AS (  -- failures before those windows, back to the earliest lookback: only a burst's baseline reads
    -- them, so they are read only when something bursts (joined on the error codes, the scan filters rows by them;
    -- with no burst it stops at its first rows)
    SELECT caller_arn(principal_arn, session_issuer_arn) AS principal_arn, event_time
    FROM events
    SEMI JOIN (SELECT unnest($error_codes) AS error_code FROM (SELECT DISTINCT true FROM bursts)) USING (error_code)
    WHERE event_source = 'kms.amazonaws.com'
      AND event_time >= $baseline_start
      AND event_time < $since - $window
),

bucket_counts AS (  -- failures per bursting principal and $window bucket: the baseline side
    SELECT principal_arn, time_bucket($window, event_time) AS bucket, count(*) AS failures
    FROM (
        SELECT principal_arn, event_time FROM past_failures SEMI JOIN bursts USING (principal_arn)
        UNION ALL
        SELECT principal_arn, event_time FROM failures
    )
    GROUP BY principal_arn, bucket
),

baseline AS (  -- the principal's worst $window bucket in the burst bucket's lookback, before its sliding window
    SELECT b.principal_arn, b.bucket, max(h.failures) AS baseline_max
    FROM bursts AS b
    JOIN bucket_counts AS h USING (principal_arn)
    WHERE h.bucket < b.bucket - $window
      AND h.bucket >= b.bucket - $lookback
    GROUP BY b.principal_arn, b.bucket
)

SELECT
    b.principal_arn,
    CASE WHEN count(DISTINCT f.key_arn) = 1 THEN any_value(f.key_arn) END AS resource_arn,
    any_value(f.recipient_account_id) AS account_id,
    any_value(f.aws_region) AS region,
    b.first_seen,
    b.last_seen,
    count(*) AS event_count,
    b.peak AS peak_in_window,
    coalesce(any_value(base.baseline_max), 0) AS baseline_max,
    count(DISTINCT f.key_arn) AS distinct_keys,
    list_sort(list(DISTINCT f.error_code)) AS error_codes,
    list_sort(list(DISTINCT f.event_name)) AS event_names,
    list_sort(list(DISTINCT f.source_ip))[:$max_listed] AS source_ips
FROM bursts AS b
JOIN failures AS f ON f.principal_arn = b.principal_arn AND f.event_time BETWEEN b.first_seen AND b.last_seen
LEFT JOIN baseline AS base ON base.principal_arn = b.principal_arn AND base.bucket = b.bucket
GROUP BY b.principal_arn, b.bucket, b.first_seen, b.last_seen, b.peak
HAVING b.peak > $baseline_factor * coalesce(any_value(base.baseline_max), 0)
ORDER BY b.first_seen
