-- Why: stolen credentials get probed: the attacker does not know what the key / role may do, so the trail
-- fills with AccessDenied on KMS keys and secrets (T1087/T1526 discovery, T1552 attempts), often across
-- many keys or secrets. One denial now and then is normal (a typo, a missing grant); a storm in a sliding
-- $window is not. Counted per principal, and per source IP when several principals are denied from the same
-- address (several stolen keys used from one host). Each actor is compared with its worst $window bucket in
-- the lookback, so a monitoring tool that is denied on the same call every minute stays quiet. One finding per
-- actor and $window bucket, judged as the scheduled run of that bucket would: the denials of the bucket (their
-- sliding window may reach into the previous bucket) against the lookback before it.
-- Two scales: the $window burst, and a $paced_window (hours) for a probe paced to stay under any per-minute
-- count - it must walk at least $paced_min_resources keys or secrets (a job retrying one call is not probing),
-- and beat the actor's worst $paced_window in the lookback. One finding per actor and bucket either way.
WITH denials AS (
    SELECT
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        source_ip,
        recipient_account_id,
        aws_region,
        event_source,
        event_name,
        error_code,
        event_time,
        coalesce(key_arn, key_id, secret_id) AS resource
    FROM events
    WHERE list_contains($event_sources, event_source)
      AND list_contains($error_codes, error_code)
      AND error_code IS NOT NULL  -- filtered by the scan row by row (list_contains only prunes row groups)
      AND event_time >= $baseline_start
      AND event_time < $until
),

by_actor AS (  -- each denial seen from two sides: who, and from where (AWS-internal addresses excluded)
    SELECT 'principal' AS actor_kind, principal_arn AS actor, * FROM denials WHERE principal_arn IS NOT NULL
    UNION ALL
    SELECT 'source_ip' AS actor_kind, source_ip AS actor, *
    FROM denials
    WHERE source_ip IS NOT NULL AND NOT list_contains($ignored_source_ips, source_ip) AND source_ip NOT LIKE '%.amazonaws.com'
),

bucket_counts AS (  -- denials per actor and $window bucket: the baseline side
    SELECT actor_kind, actor, time_bucket($window, event_time) AS bucket, count(*) AS denied
    FROM by_actor
    GROUP BY actor_kind, actor, bucket
),

sliding AS (  -- denials, distinct resources and distinct principals in the $window and the $paced_window ending at
    -- each denial (the lookback's too: the slow scale's baseline is its worst window there)
    SELECT
        *,
        time_bucket($window, event_time) AS bucket,
        count(*) OVER w AS burst_denials,
        count(DISTINCT resource) OVER w AS burst_resources,
        count(DISTINCT principal_arn) OVER w AS burst_principals,
        min(event_time) OVER w AS burst_first,
        count(*) OVER p AS paced_denials,
        count(DISTINCT resource) OVER p AS paced_resources,
        count(DISTINCT principal_arn) OVER p AS paced_principals,
        min(event_time) OVER p AS paced_first
    FROM by_actor
    WINDOW
        w AS (PARTITION BY actor_kind, actor ORDER BY event_time RANGE BETWEEN $window PRECEDING AND CURRENT ROW),
        p AS (PARTITION BY actor_kind, actor ORDER BY event_time RANGE BETWEEN $paced_window PRECEDING AND CURRENT ROW)
),

scaled AS (  -- each judged denial once per scale
    SELECT actor_kind, actor, bucket, event_time, 'burst' AS scale, burst_denials AS denials,
           burst_resources AS resources, burst_principals AS principals, burst_first AS window_first
    FROM sliding
    WHERE event_time >= $since AND burst_denials >= $min_denials
    UNION ALL
    SELECT actor_kind, actor, bucket, event_time, 'paced' AS scale, paced_denials, paced_resources, paced_principals,
           paced_first
    FROM sliding
    WHERE event_time >= $since AND paced_denials >= $paced_min_denials AND paced_resources >= $paced_min_resources
),

storms AS (  -- per actor, judged bucket and scale: its first full window (may start a bucket earlier) to its last
    -- denial; an IP is an actor when several principals are denied from it
    SELECT
        actor_kind,
        actor,
        bucket,
        scale,
        min(window_first) AS first_seen,
        max(event_time) AS last_seen,
        max(denials) AS peak,
        max(resources) AS peak_resources
    FROM scaled
    WHERE actor_kind = 'principal' OR principals >= $min_ip_principals
    GROUP BY actor_kind, actor, bucket, scale
),

baselines AS (  -- the actor's worst window in the storm bucket's lookback, before its own window: the burst's
    -- $window buckets; the slow scale's sliding windows wholly inside the lookback (a long run and the scheduled
    -- runs count the same)
    SELECT s.actor_kind, s.actor, s.bucket, s.scale, max(h.denied) AS baseline_max
    FROM storms AS s
    JOIN bucket_counts AS h USING (actor_kind, actor)
    WHERE s.scale = 'burst'
      AND h.bucket < s.bucket - $window
      AND h.bucket >= s.bucket - $lookback
    GROUP BY ALL
    UNION ALL
    SELECT s.actor_kind, s.actor, s.bucket, s.scale, max(h.paced_denials) AS baseline_max
    FROM storms AS s
    JOIN sliding AS h USING (actor_kind, actor)
    WHERE s.scale = 'paced'
      AND h.event_time < s.bucket - $paced_window
      AND h.event_time >= s.bucket - $lookback + $paced_window
    GROUP BY ALL
),

over_baseline AS (  -- each scale's storms over their own baseline
    SELECT s.*, coalesce(b.baseline_max, 0) AS baseline_max
    FROM storms AS s
    LEFT JOIN baselines AS b USING (actor_kind, actor, bucket, scale)
    WHERE s.peak > $baseline_factor * coalesce(b.baseline_max, 0)
),

findings AS (  -- one per actor and bucket: the burst when both scales storm
    SELECT * FROM over_baseline
    QUALIFY row_number() OVER (PARTITION BY actor_kind, actor, bucket ORDER BY scale) = 1
)

SELECT
    s.actor_kind,
    s.actor,
    CASE WHEN count(DISTINCT d.principal_arn) = 1 THEN any_value(d.principal_arn) END AS principal_arn,
    CASE WHEN count(DISTINCT d.resource) = 1 THEN any_value(d.resource) END AS resource_arn,
    any_value(d.recipient_account_id) AS account_id,
    any_value(d.aws_region) AS region,
    CASE WHEN s.peak_resources >= $min_distinct_resources THEN 'high' END AS severity,
    s.scale,
    s.first_seen,
    s.last_seen,
    count(*) AS event_count,
    s.peak AS peak_in_window,
    s.peak_resources AS peak_distinct_resources,
    s.baseline_max,
    list_sort(list(DISTINCT d.principal_arn) FILTER (WHERE d.principal_arn IS NOT NULL))[:$max_listed] AS principals,
    list_sort(list(DISTINCT d.source_ip) FILTER (WHERE d.source_ip IS NOT NULL))[:$max_listed] AS source_ips,
    list_sort(list(DISTINCT d.event_name)) AS event_names,
    list_sort(list(DISTINCT d.error_code)) AS error_codes
FROM findings AS s
JOIN by_actor AS d
    ON d.actor_kind = s.actor_kind AND d.actor = s.actor AND d.event_time BETWEEN s.first_seen AND s.last_seen
GROUP BY s.actor_kind, s.actor, s.bucket, s.scale, s.first_seen, s.last_seen, s.peak, s.peak_resources, s.baseline_max
ORDER BY s.first_seen
