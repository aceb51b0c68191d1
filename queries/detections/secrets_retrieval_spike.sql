-- Why: GetSecretValue is read-only, so CloudTrail Insights never sees its volume, and static rules cannot
-- tell a broken cache or an exfiltration loop from a nightly job. Each principal is compared with its own
-- lookback for the same secret: the current bucket must exceed `spike_factor` times the larger of the
-- principal's typical busy-hour count (median over active buckets) and its biggest count at the same hour
-- of day (+/- `hour_tolerance` hours, so a nightly job that starts a little late is still "usual").
-- A (principal, secret) pair with no history at all fires only on a large volume.
-- Each $window bucket is judged with its own lookback [bucket - lookback, bucket), as the scheduled run at
-- its end would: earlier buckets of a long run are history for later ones. The lookback comes from the hourly
-- rollups (`hourly`, one row per secret a call names), the judged buckets from the raw events.
-- BatchGetSecretValue counts once for every secret it names; a filter-based batch names none and is left
-- to secrets_enumeration.
WITH window_reads AS (  -- filtered before the unnest below, so the scan skips all but the run's row groups
    SELECT *
    FROM events
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND event_time >= time_bucket($window, $since)
      AND event_time < $until
),

secret_reads AS (
    SELECT
        r.event_id,
        r.event_time,
        timezone('UTC', r.event_time) AS utc_time,  -- hour-of-day must not depend on the session time zone
        named_caller(caller_arn(r.principal_arn, r.session_issuer_arn), r.principal_type, r.principal_account_id) AS principal_arn,  -- see queries/README.md
        r.recipient_account_id,
        r.aws_region,
        r.source_ip,
        s.secret,
        secret_name(s.secret) AS secret_name
    FROM window_reads AS r, unnest(r.secret_ids) AS s(secret)
    WHERE named_caller(caller_arn(r.principal_arn, r.session_issuer_arn), r.principal_type, r.principal_account_id) IS NOT NULL
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
),

judged AS (  -- buckets of the run over the volume floor (usually few): only these are compared with a lookback
    SELECT * FROM bucketed WHERE last_seen >= $since AND reads >= $min_reads
),

past_buckets AS (  -- the lookback side, from the hourly rollups (same filters): the judged pairs' reads per bucket
    SELECT
        named_caller(caller_arn, principal_type, caller_account_id) AS principal_arn,
        secret_name(secret_id) AS secret_name,
        time_bucket($window, timezone('UTC', hour)) AS bucket,
        sum(events)::BIGINT AS reads
    FROM hourly
    SEMI JOIN (SELECT DISTINCT principal_arn, secret_name FROM judged) AS j
        ON j.principal_arn = named_caller(hourly.caller_arn, hourly.principal_type, hourly.caller_account_id)
        AND j.secret_name = secret_name(hourly.secret_id)
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND hour >= time_bucket($window, $since) - $lookback
      AND hour < $until
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

scored AS (
    SELECT
        c.*,
        t.typical_reads,
        coalesce(t.active_buckets, 0) AS active_buckets,
        coalesce(s.same_hour_max, 0) AS same_hour_max,
        greatest(t.typical_reads, s.same_hour_max, $baseline_floor) AS expected_reads
    FROM judged AS c
    LEFT JOIN typical AS t USING (principal_arn, secret_name, bucket)
    LEFT JOIN same_hour AS s USING (principal_arn, secret_name, bucket)
)

SELECT
    principal_arn,
    secret_ref AS resource_arn,
    account_id,
    region,
    bucket AS bucket_start,
    first_seen,
    last_seen,
    calls AS event_count,
    reads,
    typical_reads,
    same_hour_max,
    active_buckets,
    round(reads / nullif(expected_reads, 0), 1) AS ratio_to_expected,
    source_ips
FROM scored
WHERE reads >= $min_reads
  AND (
      (active_buckets = 0 AND reads >= $new_pair_min_reads AND $history_start <= bucket - $lookback)
      OR (active_buckets > 0 AND reads >= $spike_factor * expected_reads)
  )
ORDER BY first_seen
