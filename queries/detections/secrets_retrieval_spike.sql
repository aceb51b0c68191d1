-- Why: GetSecretValue is read-only, so CloudTrail Insights never sees its volume, and static rules cannot
-- tell a broken cache or an exfiltration loop from a nightly job. Each principal is compared with its own
-- lookback for the same secret: the current bucket must exceed `spike_factor` times the larger of the
-- principal's typical busy-hour count (median over active buckets) and its biggest count at the same hour
-- of day (+/- `hour_tolerance` hours, so a nightly job that starts a little late is still "usual").
-- A (principal, secret) pair with no history at all fires only on a large volume.
-- Each $window bucket is judged with its own lookback [bucket - lookback, bucket), as the scheduled run at
-- its end would: earlier buckets of a long run are history for later ones. The hourly rollups (`hourly`, one
-- row per secret a call names) give the lookback and the judged buckets' read counts; the raw events of the
-- run are read only for the buckets those counts say could spike, which are counted exactly and described
-- (calls, source IPs) from them.
-- BatchGetSecretValue counts once for every secret it names; a filter-based batch names none and is left
-- to secrets_enumeration.
WITH rollup_reads AS (  -- the rollups' reads per principal, secret and hour, same filters as the raw reads below
    SELECT
        named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,  -- see queries/README.md
        secret_name(secret_id) AS secret_name,
        time_bucket($window, timezone('UTC', hour)) AS bucket,  -- hour-of-day must not depend on the session time zone
        events,
        last_seen
    FROM hourly
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND secret_id IS NOT NULL  -- a call naming no secret has no row below either
      AND named_caller(caller_arn, principal_type, caller_account_id) IS NOT NULL
      AND hour >= time_bucket($window, $since) - $lookback
      AND hour < $until
),

judged AS (  -- the run's buckets over the volume floor (usually few): only these are compared with a lookback.
    -- Their reads are the raw count for every whole hour; an hour cut by $until also counts its calls after $until,
    -- so here reads and last_seen are at least the raw ones (a superset, checked against the raw calls below)
    SELECT principal_arn, secret_name, bucket, sum(events)::BIGINT AS reads
    FROM rollup_reads
    WHERE bucket >= time_bucket($window, timezone('UTC', $since))
    GROUP BY ALL
    HAVING max(last_seen) >= $since AND sum(events) >= $min_reads
),

past_buckets AS (  -- the lookback side: the judged pairs' reads per bucket
    SELECT principal_arn, secret_name, bucket, sum(events)::BIGINT AS reads
    FROM rollup_reads
    SEMI JOIN (SELECT DISTINCT principal_arn, secret_name FROM judged) AS j USING (principal_arn, secret_name)
    GROUP BY ALL
),

history AS (  -- each judged bucket's own lookback: the pair's buckets in [bucket - lookback, bucket)
    SELECT j.principal_arn, j.secret_name, j.bucket, h.bucket AS past_bucket, h.reads
    FROM judged AS j
    JOIN past_buckets AS h USING (principal_arn, secret_name)
    WHERE h.bucket < j.bucket
      AND h.bucket >= j.bucket - $lookback
),

typical AS (  -- the principal's usual busy bucket for this secret
    SELECT principal_arn, secret_name, bucket, median(reads) AS typical_reads, count(*) AS active_buckets
    FROM history
    GROUP BY ALL
),

same_hour AS (  -- the biggest count at this hour of day (circular distance, so 23:00 is next to 00:00)
    SELECT principal_arn, secret_name, bucket, max(reads) AS same_hour_max
    FROM history
    WHERE least(
        abs(hour(bucket) - hour(past_bucket)), 24 - abs(hour(bucket) - hour(past_bucket))
    ) <= $hour_tolerance
    GROUP BY ALL
),

scored AS (  -- per judged bucket, the fewest reads that fire: a spike over the expected count, or a large volume
    -- for a pair with no history (only once the lake is older than the lookback); NULL: cannot fire
    SELECT
        j.*,
        t.typical_reads,
        coalesce(t.active_buckets, 0) AS active_buckets,
        coalesce(s.same_hour_max, 0) AS same_hour_max,
        greatest(t.typical_reads, s.same_hour_max, $baseline_floor) AS expected_reads,
        CASE
            WHEN t.active_buckets > 0 THEN greatest($min_reads, $spike_factor * expected_reads)
            WHEN $history_start <= j.bucket - $lookback THEN greatest($min_reads, $new_pair_min_reads)
        END AS firing_reads
    FROM judged AS j
    LEFT JOIN typical AS t USING (principal_arn, secret_name, bucket)
    LEFT JOIN same_hour AS s USING (principal_arn, secret_name, bucket)
),

spikes AS (  -- buckets whose rollup count fires (usually none): a superset, as the count is at least the raw one
    SELECT * EXCLUDE (reads) FROM scored WHERE reads >= firing_reads
),

window_reads AS (  -- filtered before the unnest below, so the scan skips all but the run's row groups
    SELECT *
    FROM events
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND event_time >= time_bucket($window, $since)
      AND event_time < $until
),

secret_reads AS (  -- the spiking pairs' raw reads (none read when there are no spikes)
    SELECT *
    FROM (
        SELECT
            r.event_id,
            r.event_time,
            timezone('UTC', r.event_time) AS utc_time,
            named_caller(caller_arn(r.principal_arn, r.session_issuer_arn), r.principal_type, r.principal_account_id) AS principal_arn,
            r.recipient_account_id,
            r.aws_region,
            r.source_ip,
            s.secret,
            secret_name(s.secret) AS secret_name
        FROM window_reads AS r, unnest(r.secret_ids) AS s(secret)
    )
    SEMI JOIN spikes USING (principal_arn, secret_name)
),

bucketed AS (
    SELECT
        principal_arn,
        secret_name,
        time_bucket($window, utc_time) AS bucket,
        count(*) AS reads,
        count(DISTINCT event_id) AS calls,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        -- prefer a full ARN as the resource; callers may name the secret either way
        coalesce(max(secret) FILTER (WHERE contains(secret, ':secret:')), max(secret)) AS secret_ref,
        any_value(recipient_account_id) AS account_id,
        mode(aws_region) AS region,
        list_sort(list(DISTINCT source_ip)) AS source_ips
    FROM secret_reads
    GROUP BY ALL
)

SELECT
    principal_arn,
    b.secret_ref AS resource_arn,
    b.account_id,
    b.region,
    bucket AS bucket_start,
    b.first_seen,
    b.last_seen,
    b.calls AS event_count,
    b.reads,
    s.typical_reads,
    s.same_hour_max,
    s.active_buckets,
    round(b.reads / nullif(s.expected_reads, 0), 1) AS ratio_to_expected,
    b.source_ips
FROM bucketed AS b
JOIN spikes AS s USING (principal_arn, secret_name, bucket)
WHERE b.reads >= s.firing_reads  -- the exact count of the raw reads decides
  AND b.last_seen >= $since
ORDER BY first_seen
