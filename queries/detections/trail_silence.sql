-- Why: an attacker who cannot stop the trail may still cut what it records (event selectors, an SCP on the
-- trail's bucket, a broken delivery) and keytrail then reports "no findings" over an account that is simply
-- not being heard (ATT&CK T1562.008). This finds an account/region whose KMS + Secrets Manager calls stopped
-- for longer than its own history says is normal at this time of day: the silence so far (since its last
-- call) is compared with the quiet stretch that covered the same moment on each earlier day of the lookback
-- (from its last call to its next), so a region that is quiet every night from midnight to six stays quiet at
-- five in the morning, and the same hours of silence at two in the afternoon fire. Each $window bucket is
-- judged at its end, only from calls in its own lookback (the hourly rollups: a run's cost follows the window).
-- The silent stretch must also have held at least min_expected_calls calls on a typical earlier day (median):
-- a sparse account whose few calls arrive at random is not silent when its first call of the day comes late.
-- When several account/regions are silent and the whole lake has heard nothing from anyone for $min_silence
-- (a trail stopped at its source, or ingest not running), that is one finding for the whole trail (no account,
-- `silent_accounts` lists them), not one per account/region and hour.
WITH audited_hours AS (  -- per account/region and hour: its first and last audited call, from the hourly rollups
    SELECT
        recipient_account_id AS account_id,
        aws_region AS region,
        hour,
        min(first_seen) AS first_call,
        max(last_seen) AS last_call,
        sum(events)::BIGINT AS calls
    FROM hourly
    WHERE list_contains($audited_sources, event_source)
      AND hour >= date_trunc('hour', $baseline_start)
      AND hour < $until
    GROUP BY ALL
),

activity AS (  -- moments are whole hours, so the last call before one and the next after it are exact from these
    SELECT account_id, region, unnest([first_call, last_call]) AS event_time
    FROM audited_hours
),

buckets AS (  -- the buckets judged, each at its end
    SELECT bucket, bucket + $window AS judged_at
    FROM (SELECT unnest(generate_series(time_bucket($window, $since), $until, $window)) AS bucket)
    WHERE bucket < $until
      AND $history_start <= bucket - $lookback
),

candidates AS (  -- every account/region heard from in the read range, for every bucket (judged below only
    -- where its last call lies inside the bucket's own lookback)
    SELECT b.bucket, b.judged_at, a.account_id, a.region
    FROM buckets AS b
    CROSS JOIN (SELECT DISTINCT account_id, region FROM activity) AS a
),

moments AS (  -- the bucket's end, and the same moment on each earlier day of the lookback
    SELECT c.*, d AS days_back, c.judged_at - to_days(CAST(d AS INTEGER)) AS moment
    FROM candidates AS c, range(0, CAST(floor(epoch($lookback) / 86400) AS BIGINT)) AS r(d)
),

silences AS (  -- each moment's silence: since its last call (today: so far) and until its next call (earlier
    -- days: the whole quiet stretch that covered that time of day). Unknown when the last call is older than the
    -- bucket's lookback; nothing after the bucket's end is seen (a later run's data)
    SELECT
        m.*,
        CASE WHEN a.event_time >= m.bucket - $lookback THEN a.event_time END AS last_call,
        m.moment - last_call AS silence
    FROM moments AS m
    ASOF LEFT JOIN activity AS a
        ON a.account_id = m.account_id
        AND a.region = m.region
        AND m.moment > a.event_time
),

stretches AS (
    SELECT
        s.*,
        least(coalesce(a.event_time, s.judged_at), s.judged_at) - s.last_call AS stretch
    FROM silences AS s
    ASOF LEFT JOIN activity AS a
        ON a.account_id = s.account_id
        AND a.region = s.region
        AND s.moment <= a.event_time
),

judged AS (
    SELECT
        account_id,
        region,
        bucket,
        judged_at,
        any_value(silence) FILTER (days_back = 0) AS silence,
        any_value(last_call) FILTER (days_back = 0) AS silent_since,
        max(stretch) FILTER (days_back > 0) AS usual_silence,
        count(stretch) FILTER (days_back > 0) AS days_known
    FROM stretches
    GROUP BY account_id, region, bucket, judged_at
),

silent AS (  -- buckets silent for longer than the same moment on earlier days allowed
    SELECT *
    FROM judged
    WHERE days_known >= $min_history_days  -- and heard from within the bucket's lookback (silence not null):
      AND epoch(silence) > greatest(epoch($min_silence), epoch(usual_silence) * $tolerance)
),

earlier_calls AS (  -- the calls the same stretch of time of day held on each earlier day of the lookback
    SELECT s.account_id, s.region, s.bucket, r.days_back, coalesce(sum(h.calls), 0) AS calls
    FROM silent AS s
    CROSS JOIN range(1, CAST(floor(epoch($lookback) / 86400) AS BIGINT)) AS r(days_back)
    LEFT JOIN audited_hours AS h
        ON h.account_id = s.account_id
        AND h.region = s.region
        AND h.hour >= date_trunc('hour', s.silent_since) - to_days(CAST(r.days_back AS INTEGER))
        AND h.hour < s.judged_at - to_days(CAST(r.days_back AS INTEGER))
    GROUP BY ALL
),

expected AS (  -- a sparse account whose calls arrive at random (a dozen a day) is not silent when its first
    -- call comes late; a busy one that usually makes many calls in that stretch is
    SELECT account_id, region, bucket, median(calls) AS usual_calls
    FROM earlier_calls
    GROUP BY ALL
),

found AS (
    SELECT s.*, e.usual_calls
    FROM silent AS s
    JOIN expected AS e USING (account_id, region, bucket)
    WHERE e.usual_calls >= $min_expected_calls
),

trail_wide AS (  -- per bucket: the last call the lake heard from any account/region, and how many are silent
    SELECT j.bucket, max(j.silent_since) AS trail_last_call, any_value(f.silent_count) AS silent_count
    FROM judged AS j
    LEFT JOIN (SELECT bucket, count(*) AS silent_count FROM found GROUP BY bucket) AS f USING (bucket)
    GROUP BY j.bucket
),

scoped AS (
    SELECT
        f.*,
        t.silent_count >= $whole_trail_min_silent
            AND (t.trail_last_call IS NULL OR epoch(f.judged_at - t.trail_last_call) > epoch($min_silence))
            AS whole_trail,
        t.trail_last_call
    FROM found AS f
    JOIN trail_wide AS t USING (bucket)
)

SELECT
    account_id,
    region,
    'account' AS scope,
    bucket AS first_seen,
    judged_at AS last_seen,
    0 AS event_count,  -- a silence is the absence of events
    silent_since,
    round(epoch(silence) / 3600, 1) AS silent_hours,
    round(epoch(usual_silence) / 3600, 1) AS usual_silent_hours,
    days_known,
    usual_calls AS usual_calls_in_silence,
    NULL::VARCHAR[] AS silent_accounts
FROM scoped
WHERE NOT whole_trail
UNION ALL
SELECT
    NULL AS account_id,
    NULL AS region,
    'whole_trail' AS scope,
    bucket AS first_seen,
    any_value(judged_at) AS last_seen,
    0 AS event_count,
    any_value(trail_last_call) AS silent_since,
    round(epoch(any_value(judged_at) - any_value(trail_last_call)) / 3600, 1) AS silent_hours,
    round(max(epoch(usual_silence)) / 3600, 1) AS usual_silent_hours,
    min(days_known) AS days_known,
    sum(usual_calls) AS usual_calls_in_silence,
    list_sort(list(account_id || ' ' || region))[:$max_listed] AS silent_accounts
FROM scoped
WHERE whole_trail
GROUP BY bucket
ORDER BY first_seen, account_id NULLS FIRST, region
