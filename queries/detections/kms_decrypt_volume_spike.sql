-- Why: Decrypt / GenerateDataKey / ReEncrypt hand out plaintext keys. Mass decryption is how stolen
-- credentials turn ciphertext into data (T1530/T1552), and CloudTrail Insights never sees it (read-only
-- calls). Each (principal, key) is compared with ITS OWN lookback, at two scales:
--   * burst: the busiest $window (sliding: ending at any call, so a burst straddling a bucket boundary is
--     counted whole) against the typical level - the p-th percentile of its hourly counts over the lookback,
--     idle hours counted as zero (a big nightly job is a few percent of the hours) - and the same hour of day:
--     its largest count at this hour (+/- hour_tolerance) on previous days, so a scheduled job of the usual
--     size at the usual time is normal. It fires when it beats both (times their factors) and min_events.
--   * sustained: the calls of the last $sustained (4 h) against the same stretch of time of day on each
--     earlier day of the lookback (the largest, +/- hour_tolerance): paced exfiltration at several times the
--     usual level for hours is found even when no single hour is extreme. Only for pairs active on at least
--     sustained_min_days days (a new service ramping up has no time-of-day habit yet).
-- A pair with no history at all fires only on new_pair_min_events in one sliding $window: a fresh deployment
-- ramps up, an attacker's new key user rarely stays small. People are not workloads: a human principal
-- (principal_kind: IAM user, Identity Center, console) has its own, lower floors (human_*).
-- Each bucket is judged with its own lookback [bucket - lookback, bucket - $window), as the scheduled run at its
-- end would: earlier buckets of a long run are history for later ones (the bucket before is left out: a sliding
-- window reaching into it must not be its own baseline). The lookback and the run's own bucket counts come from
-- the hourly rollups (`hourly`; $window is a whole number of hours here), so a run reads raw events only for the
-- few buckets that could fire (their caller's kind, sliding windows and evidence) and an hour cut by $until.
-- A finding is reported in the bucket its peak window ends in, its alert id bucketed by where that window starts:
-- reruns and longer runs give the same id.
WITH calls AS NOT MATERIALIZED (  -- the run's raw calls (and the $window before them, for sliding windows), read
    -- only for the candidates and an hour cut by $until (streamed, not held: a backtest reads 30 days)
    SELECT
        named_caller(caller_arn(principal_arn, session_issuer_arn), principal_type, principal_account_id) AS principal_arn,
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        event_name,
        source_ip,
        event_time,
        time_bucket($window, event_time) AS bucket,
        -- principal_kind's inputs, for the judged buckets' calls only (per row it is costly)
        principal_arn AS session_arn,
        session_issuer_arn,
        principal_type,
        invoked_by,
        user_agent
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      -- reads a service makes for the caller that another detection already sees first-hand
      AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
      AND named_caller(caller_arn(principal_arn, session_issuer_arn), principal_type, principal_account_id) IS NOT NULL
      AND event_time >= time_bucket($window, $since) - $window
      AND event_time < $until
      -- the same span on the partition column (the UTC date of event_time): other days' files are never opened
      AND event_date >= CAST(time_bucket($window, $since) - $window AS DATE)
      AND event_date <= CAST($until AS DATE)
),

bucket_calls AS (  -- per pair and bucket (the one before the run's first too): its calls, from the hourly rollups
    -- (same filters; counts, first and last call are exact), but for an hour cut by $until, counted from its calls
    SELECT
        principal_arn,
        key_arn,
        bucket,
        sum(calls)::BIGINT AS calls,
        min(first_call) AS first_call,
        max(last_seen) AS last_seen,
        any_value(account_id) AS account_id,
        any_value(region) AS region
    FROM (
        SELECT
            named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,
            kms_key AS key_arn,
            time_bucket($window, hour) AS bucket,
            events AS calls,
            first_seen AS first_call,
            last_seen,
            recipient_account_id AS account_id,
            aws_region AS region
        FROM hourly
        WHERE event_source = 'kms.amazonaws.com'
          AND list_contains($read_events, event_name)
          AND error_code IS NULL
          AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
          AND named_caller(caller_arn, principal_type, caller_account_id) IS NOT NULL
          AND hour >= time_bucket($window, $since) - $window
          AND hour < date_trunc('hour', $until)
        UNION ALL
        SELECT principal_arn, key_arn, bucket, 1, event_time, event_time, recipient_account_id, aws_region
        FROM calls
        WHERE event_time >= date_trunc('hour', $until)
    )
    GROUP BY principal_arn, key_arn, bucket
),

buckets AS (  -- per pair and judged bucket: its calls, and a bound on its busiest sliding window (which lies in
    -- this bucket and the one before): a window is counted exactly only where that bound could fire
    SELECT b.*, (b.calls + coalesce(p.calls, 0))::BIGINT AS peak_bound
    FROM bucket_calls AS b
    LEFT JOIN bucket_calls AS p
        ON p.principal_arn = b.principal_arn AND p.key_arn = b.key_arn AND p.bucket = b.bucket - $window
    WHERE b.bucket >= time_bucket($window, $since)
),

past_buckets AS (  -- the lookback side, from the hourly rollups (same filters): the judged pairs' calls per bucket
    SELECT
        named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,
        kms_key AS key_arn,
        time_bucket($window, hour) AS bucket,
        sum(events)::BIGINT AS calls,
        min(first_seen) AS first_seen
    FROM hourly
    SEMI JOIN (SELECT DISTINCT principal_arn, key_arn FROM buckets) AS j
        ON j.principal_arn = named_caller(hourly.caller_arn, hourly.principal_type, hourly.caller_account_id)
        AND j.key_arn = hourly.kms_key
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND NOT list_contains($covered_invokers, coalesce(invoked_by, ''))
      -- the lookback, and the sustained stretch of its first day (the engine reads a day before the lookback)
      AND hour >= time_bucket($window, $since) - $lookback - $sustained - to_hours($hour_tolerance)
      AND hour < $until
    GROUP BY ALL
),

day_before AS (  -- per bucket: the pair's calls a day earlier, and its sustained stretch now and a day earlier
    -- (lower bounds of the same-hour maximum and of the expected stretch compared below)
    SELECT
        b.principal_arn,
        b.key_arn,
        b.bucket,
        b.calls + coalesce(sum(p.calls) FILTER (WHERE o.moment > b.bucket - to_days(1)), 0) AS stretch_now,
        coalesce(sum(p.calls) FILTER (WHERE o.moment <= b.bucket - to_days(1)), 0) AS stretch_day_before,
        coalesce(sum(p.calls) FILTER (WHERE o.moment = b.bucket - to_days(1)), 0) AS calls_day_before
    FROM buckets AS b,
        unnest(list_concat(
            generate_series(b.bucket - $sustained + $window, b.bucket - $window, $window),
            generate_series(b.bucket - to_days(1) - $sustained + $window, b.bucket - to_days(1), $window)
        )) AS o(moment)
    LEFT JOIN past_buckets AS p
        ON p.principal_arn = b.principal_arn AND p.key_arn = b.key_arn AND p.bucket = o.moment
    GROUP BY b.principal_arn, b.key_arn, b.bucket, b.calls
),

judged AS (  -- buckets that could fire at any scale (usually few): only these are compared with their lookback.
    -- A burst must beat its floor and the same hour a day earlier (part of the same-hour maximum), a sustained
    -- rise the same stretch a day earlier (one of the earlier stretches): busy, steady pairs stop here
    SELECT b.*
    FROM buckets AS b
    LEFT JOIN day_before AS d USING (principal_arn, key_arn, bucket)
    WHERE (
        b.peak_bound >= least($min_events, $new_pair_min_events, $human_min_events, $human_new_pair_min_events)
        AND b.peak_bound > $same_hour_factor * coalesce(d.calls_day_before, 0)
    ) OR (
        b.calls * epoch($sustained) / epoch($window) >= $sustained_min_events
        AND coalesce(d.stretch_now, b.calls) > $sustained_factor * coalesce(d.stretch_day_before, 0)
    )
),

history AS (  -- each judged bucket's own lookback: the pair's buckets in [bucket - lookback, bucket - $window)
    SELECT j.principal_arn, j.key_arn, j.bucket, h.bucket AS past_bucket, h.calls
    FROM judged AS j
    JOIN past_buckets AS h USING (principal_arn, key_arn)
    WHERE h.bucket < j.bucket - $window
      AND h.bucket >= j.bucket - $lookback
),

history_ranked AS (  -- rank of each past bucket from the busiest down, per pair and judged bucket
    SELECT
        *,
        row_number() OVER lookback AS rank_from_top,
        count(*) OVER lookback AS active_buckets,
        -- every bucket since the pair first appeared in the lookback, idle ones included
        (epoch(bucket - $window) - epoch(min(past_bucket) OVER lookback)) // epoch($window) AS total_buckets
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
        count(DISTINCT past_bucket::DATE) AS active_days,
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

recent_stretch AS (  -- the sustained stretch ending with each judged bucket: its calls and where they start
    SELECT
        j.principal_arn,
        j.key_arn,
        j.bucket,
        (j.calls + coalesce(sum(h.calls), 0))::BIGINT AS stretch_calls,
        least(min(h.first_seen), any_value(j.first_call)) AS stretch_first
    FROM judged AS j
    LEFT JOIN past_buckets AS h
        ON h.principal_arn = j.principal_arn
        AND h.key_arn = j.key_arn
        AND h.bucket < j.bucket
        AND h.bucket > j.bucket - $sustained
    GROUP BY j.principal_arn, j.key_arn, j.bucket, j.calls
),

earlier_stretches AS (  -- the same stretch on each earlier day of the lookback, shifted up to hour_tolerance
    SELECT j.principal_arn, j.key_arn, j.bucket, d.day_back, o.shift, sum(h.calls)::BIGINT AS calls
    FROM judged AS j
    CROSS JOIN range(1, epoch($lookback)::BIGINT // 86400 + 1) AS d(day_back)
    CROSS JOIN range(-$hour_tolerance, $hour_tolerance + 1) AS o(shift)
    JOIN past_buckets AS h
        ON h.principal_arn = j.principal_arn
        AND h.key_arn = j.key_arn
        AND h.bucket <= j.bucket - to_days(d.day_back) + to_hours(o.shift)
        AND h.bucket > j.bucket - to_days(d.day_back) + to_hours(o.shift) - $sustained
    GROUP BY ALL
),

sustained AS (
    SELECT
        r.principal_arn,
        r.key_arn,
        r.bucket,
        r.stretch_calls,
        r.stretch_first,
        coalesce(max(e.calls), 0) AS stretch_expected
    FROM recent_stretch AS r
    LEFT JOIN earlier_stretches AS e USING (principal_arn, key_arn, bucket)
    GROUP BY ALL
),

scored AS (
    SELECT
        j.*,
        coalesce(t.active_buckets, 0) AS active_buckets,
        coalesce(t.typical_calls, 0) AS typical_calls,
        coalesce(s.same_hour_max, 0) AS same_hour_max,
        u.stretch_calls,
        u.stretch_first,
        u.stretch_expected,
        coalesce(t.active_days, 0) AS active_days
    FROM judged AS j
    LEFT JOIN typical AS t USING (principal_arn, key_arn, bucket)
    LEFT JOIN same_hour AS s USING (principal_arn, key_arn, bucket)
    LEFT JOIN sustained AS u USING (principal_arn, key_arn, bucket)
),

candidates AS (  -- buckets that could fire under the lower of a person's and a workload's floors: only these
    -- need the caller's kind (from their raw calls). An exact superset of the findings (classified): a peak never
    -- exceeds peak_bound, and the caller's floors are never below the lower ones
    SELECT
        *,
        CASE
            WHEN active_buckets = 0
                THEN peak_bound >= least($new_pair_min_events, $human_new_pair_min_events)
                    AND $history_start <= bucket - $lookback
            ELSE peak_bound >= least($min_events, $human_min_events)
                AND peak_bound > $spike_factor * typical_calls
                AND peak_bound > $same_hour_factor * same_hour_max
        END AS could_burst
    FROM scored
    WHERE could_burst OR (
        active_buckets > 0
        AND active_days >= $sustained_min_days
        AND stretch_calls >= greatest($sustained_min_events, least($min_events, $human_min_events))
        AND stretch_calls > $sustained_factor * stretch_expected
    )
),

candidate_calls AS MATERIALIZED (  -- the candidates' raw calls: their bucket's and the one before's (a sliding
    -- window ending in the bucket reaches into it): one read of the run's calls for the kind, windows and evidence
    SELECT *
    FROM calls
    SEMI JOIN (SELECT principal_arn, key_arn, unnest([bucket, bucket - $window]) AS bucket FROM candidates) AS c
        USING (principal_arn, key_arn, bucket)
),

candidate_kind AS (  -- whether a person made any of a candidate bucket's calls (people have their own floors)
    SELECT
        principal_arn,
        key_arn,
        bucket,
        bool_or(principal_kind(principal_type, session_arn, session_issuer_arn, invoked_by, user_agent) = 'human')
            AS human
    FROM candidate_calls
    SEMI JOIN candidates USING (principal_arn, key_arn, bucket)
    GROUP BY principal_arn, key_arn, bucket
),

floored AS (  -- each candidate with its caller's floors
    SELECT
        c.*,
        coalesce(k.human, false) AS human,
        CASE WHEN k.human THEN $human_min_events ELSE $min_events END AS floor_events,
        CASE WHEN k.human THEN $human_new_pair_min_events ELSE $new_pair_min_events END AS floor_new_pair
    FROM candidates AS c
    LEFT JOIN candidate_kind AS k USING (principal_arn, key_arn, bucket)
),

burst_candidates AS (  -- where the bound on the busiest window could be a burst: these are counted exactly
    SELECT principal_arn, key_arn, bucket FROM candidates WHERE could_burst
),

sliding AS (  -- the candidates' calls in the $window ending at each call
    SELECT
        *,
        count(*) OVER w AS in_window,
        min(event_time) OVER w AS window_first
    FROM candidate_calls
    SEMI JOIN (SELECT DISTINCT principal_arn, key_arn FROM burst_candidates) AS c USING (principal_arn, key_arn)
    -- half-open like a bucket: (t - $window, t]
    WINDOW w AS (
        PARTITION BY principal_arn, key_arn ORDER BY event_time
        RANGE BETWEEN ($window - to_microseconds(1)) PRECEDING AND CURRENT ROW
    )
),

peaks AS (  -- per candidate: its busiest sliding window ending in the bucket
    SELECT
        principal_arn,
        key_arn,
        bucket,
        max(in_window) AS peak_calls,
        -- the busiest window; of equally busy ones the latest-starting (a deterministic, tightest start)
        max({'calls': in_window, 'first': window_first}).first AS peak_first
    FROM sliding
    SEMI JOIN burst_candidates USING (principal_arn, key_arn, bucket)
    GROUP BY principal_arn, key_arn, bucket
),

classified AS (
    SELECT
        s.*,
        coalesce(p.peak_calls, 0) AS peak_calls,
        p.peak_first,
        CASE
            -- "no history" only means something once the lake holds a full lookback (else: warming up, quiet)
            WHEN s.active_buckets = 0
                THEN coalesce(p.peak_calls, 0) >= s.floor_new_pair AND $history_start <= s.bucket - $lookback
            ELSE coalesce(p.peak_calls, 0) >= s.floor_events
                AND coalesce(p.peak_calls, 0) > $spike_factor * s.typical_calls
                AND coalesce(p.peak_calls, 0) > $same_hour_factor * s.same_hour_max
        END AS is_burst,
        s.active_buckets > 0
            AND s.active_days >= $sustained_min_days
            -- min_events bounds every scale: raising it quiets the detection
            AND s.stretch_calls >= greatest($sustained_min_events, s.floor_events)
            AND s.stretch_calls > $sustained_factor * s.stretch_expected AS is_sustained
    FROM floored AS s
    LEFT JOIN peaks AS p USING (principal_arn, key_arn, bucket)
)

SELECT
    c.principal_arn,
    c.key_arn AS resource_arn,
    c.account_id,
    c.region,
    CASE WHEN c.is_burst THEN 'burst' ELSE 'sustained' END AS scale,
    CASE WHEN c.human THEN 'human' ELSE 'workload' END AS principal_kind,
    CASE WHEN c.is_burst THEN c.peak_first ELSE c.stretch_first END AS first_seen,
    c.last_seen,
    CASE WHEN c.is_burst THEN c.peak_calls ELSE c.stretch_calls END AS event_count,
    c.bucket AS bucket_start,
    c.calls AS bucket_calls,
    c.active_buckets AS baseline_active_buckets,
    c.typical_calls AS baseline_typical,
    c.same_hour_max AS baseline_same_hour_max,
    round(c.peak_calls / greatest(c.typical_calls, c.same_hour_max, 1), 1) AS ratio_to_baseline,
    c.stretch_calls AS sustained_calls,
    c.stretch_expected AS sustained_expected,
    list_sort(list(DISTINCT r.event_name)) AS event_names,
    list_sort(list(DISTINCT r.source_ip))[:$max_listed] AS source_ips
FROM classified AS c
JOIN candidate_calls AS r
    ON r.principal_arn = c.principal_arn
    AND r.key_arn = c.key_arn
    -- the calls a run ending with this bucket reads (the stretch's earlier hours are counted, not listed)
    AND r.event_time >= greatest(CASE WHEN c.is_burst THEN c.peak_first ELSE c.stretch_first END, c.bucket - $window)
    AND r.event_time <= c.last_seen
WHERE c.is_burst OR c.is_sustained
GROUP BY ALL
ORDER BY first_seen
