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

sliding AS (  -- denials, distinct resources and distinct principals in the $window ending at each denial
    SELECT
        *,
        time_bucket($window, event_time) AS bucket,
        count(*) OVER w AS in_window,
        count(DISTINCT resource) OVER w AS resources_in_window,
        count(DISTINCT principal_arn) OVER w AS principals_in_window,
        min(event_time) OVER w AS window_first
    FROM by_actor
    WHERE event_time >= $since - $window
    WINDOW w AS (PARTITION BY actor_kind, actor ORDER BY event_time RANGE BETWEEN $window PRECEDING AND CURRENT ROW)
),

burst_storms AS (  -- per actor and judged bucket: its first full window (may start a bucket earlier) to its last denial
    SELECT
        actor_kind,
        actor,
        bucket,
        'burst' AS scale,
        min(window_first) AS first_seen,
        max(event_time) AS last_seen,
        max(in_window) AS peak,
        max(resources_in_window) AS peak_resources
    FROM sliding
    WHERE event_time >= $since
      AND in_window >= $min_denials
      AND (actor_kind = 'principal' OR principals_in_window >= $min_ip_principals)
    GROUP BY actor_kind, actor, bucket
),

burst_baseline AS (  -- the actor's worst $window bucket in the storm bucket's lookback, before its sliding window
    SELECT s.actor_kind, s.actor, s.bucket, max(h.denied) AS baseline_max
    FROM burst_storms AS s
    JOIN bucket_counts AS h USING (actor_kind, actor)
    WHERE h.bucket < s.bucket - $window
      AND h.bucket >= s.bucket - $lookback
    GROUP BY s.actor_kind, s.actor, s.bucket
),

paced_sliding AS (  -- the slow scale: denials, resources and principals in the $paced_window ending at each denial
    SELECT
        *,
        time_bucket($window, event_time) AS bucket,
        count(*) OVER p AS in_window,
        count(DISTINCT resource) OVER p AS resources_in_window,
        count(DISTINCT principal_arn) OVER p AS principals_in_window,
        min(event_time) OVER p AS window_first
    FROM by_actor
    WINDOW p AS (PARTITION BY actor_kind, actor ORDER BY event_time RANGE BETWEEN $paced_window PRECEDING AND CURRENT ROW)
),

paced_storms AS (
    SELECT
        actor_kind,
        actor,
        bucket,
        'paced' AS scale,
        min(window_first) AS first_seen,
        max(event_time) AS last_seen,
        max(in_window) AS peak,
        max(resources_in_window) AS peak_resources
    FROM paced_sliding
    WHERE event_time >= $since
      AND in_window >= $paced_min_denials
      AND resources_in_window >= $paced_min_resources
      AND (actor_kind = 'principal' OR principals_in_window >= $min_ip_principals)
    GROUP BY actor_kind, actor, bucket
),

paced_baseline AS (  -- the actor's worst $paced_window in the storm bucket's lookback, before its own window
    -- (windows wholly inside the lookback, so a long run and the scheduled runs count the same)
    SELECT s.actor_kind, s.actor, s.bucket, max(h.in_window) AS baseline_max
    FROM paced_storms AS s
    JOIN paced_sliding AS h USING (actor_kind, actor)
    WHERE h.event_time < s.bucket - $paced_window
      AND h.event_time >= s.bucket - $lookback + $paced_window
    GROUP BY s.actor_kind, s.actor, s.bucket
),

over_baseline AS (  -- each scale's storms over their own baseline
    SELECT s.*, coalesce(b.baseline_max, 0) AS baseline_max
    FROM burst_storms AS s
    LEFT JOIN burst_baseline AS b USING (actor_kind, actor, bucket)
    WHERE s.peak > $baseline_factor * coalesce(b.baseline_max, 0)
    UNION ALL
    SELECT s.*, coalesce(b.baseline_max, 0) AS baseline_max
    FROM paced_storms AS s
    LEFT JOIN paced_baseline AS b USING (actor_kind, actor, bucket)
    WHERE s.peak > $baseline_factor * coalesce(b.baseline_max, 0)
),

storms AS (  -- one per actor and bucket: the burst when both scales storm
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
FROM storms AS s
JOIN by_actor AS d
    ON d.actor_kind = s.actor_kind AND d.actor = s.actor AND d.event_time BETWEEN s.first_seen AND s.last_seen
GROUP BY s.actor_kind, s.actor, s.bucket, s.scale, s.first_seen, s.last_seen, s.peak, s.peak_resources, s.baseline_max
ORDER BY s.first_seen
