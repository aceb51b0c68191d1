-- Why: stolen credentials get probed: the attacker does not know what the key / role may do, so the trail
-- fills with AccessDenied on KMS keys and secrets (T1087/T1526 discovery, T1552 attempts), often across
-- many keys or secrets. One denial now and then is normal (a typo, a missing grant); a storm in a sliding
-- $window is not. Counted per principal, and per source IP when several principals are denied from the same
-- address (several stolen keys used from one host). Each actor is compared with its worst $window bucket in
-- the lookback, so a monitoring tool that is denied on the same call every minute stays quiet. One finding per
-- actor and $window bucket, judged as the scheduled run of that bucket would: the denials of the bucket (their
-- sliding window may reach into the previous bucket) against the lookback before it.
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

storms AS (  -- per actor and judged bucket: its first full window (may start a bucket earlier) to its last denial
    SELECT
        actor_kind,
        actor,
        bucket,
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

baseline AS (  -- the actor's worst $window bucket in the storm bucket's lookback, before its sliding window
    SELECT s.actor_kind, s.actor, s.bucket, max(h.denied) AS baseline_max
    FROM storms AS s
    JOIN bucket_counts AS h USING (actor_kind, actor)
    WHERE h.bucket < s.bucket - $window
      AND h.bucket >= s.bucket - $lookback
    GROUP BY s.actor_kind, s.actor, s.bucket
)

SELECT
    s.actor_kind,
    s.actor,
    CASE WHEN count(DISTINCT d.principal_arn) = 1 THEN any_value(d.principal_arn) END AS principal_arn,
    CASE WHEN count(DISTINCT d.resource) = 1 THEN any_value(d.resource) END AS resource_arn,
    any_value(d.recipient_account_id) AS account_id,
    any_value(d.aws_region) AS region,
    CASE WHEN s.peak_resources >= $min_distinct_resources THEN 'high' END AS severity,
    s.first_seen,
    s.last_seen,
    count(*) AS event_count,
    s.peak AS peak_in_window,
    s.peak_resources AS peak_distinct_resources,
    coalesce(any_value(b.baseline_max), 0) AS baseline_max,
    list_sort(list(DISTINCT d.principal_arn) FILTER (WHERE d.principal_arn IS NOT NULL))[:$max_listed] AS principals,
    list_sort(list(DISTINCT d.source_ip) FILTER (WHERE d.source_ip IS NOT NULL))[:$max_listed] AS source_ips,
    list_sort(list(DISTINCT d.event_name)) AS event_names,
    list_sort(list(DISTINCT d.error_code)) AS error_codes
FROM storms AS s
JOIN by_actor AS d
    ON d.actor_kind = s.actor_kind AND d.actor = s.actor AND d.event_time BETWEEN s.first_seen AND s.last_seen
LEFT JOIN baseline AS b ON b.actor_kind = s.actor_kind AND b.actor = s.actor AND b.bucket = s.bucket
GROUP BY s.actor_kind, s.actor, s.bucket, s.first_seen, s.last_seen, s.peak, s.peak_resources
HAVING s.peak > $baseline_factor * coalesce(any_value(b.baseline_max), 0)
ORDER BY s.first_seen
