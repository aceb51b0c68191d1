-- Why: stolen credentials are used to harvest every secret they can reach, in minutes (Stratus Red Team's
-- secretsmanager-retrieve-secrets reads 20 secrets in 4 s; BatchGetSecretValue returns up to 20 per call).
-- Public rules count ">= 20 distinct secrets in a few minutes", which pages every time a service that
-- loads its 25 config secrets restarts. Here a secret counts only at its FIRST read by the principal in the
-- bucket's lookback, so a deploy pipeline reading its usual dozen (or its usual fifty) stays quiet, re-reads
-- of a set already reported are not a new burst, and the same role suddenly reading 20 secrets it never
-- touched fires. Second branch: an identity with no Secrets Manager history that discovers secrets
-- (ListSecrets, or BatchGetSecretValue by filter, which lists and reads in one call) and reads them:
-- discovery + collection by a fresh identity, even below the count.
-- Two scales: `burst` (minutes: a script harvesting everything it can reach) and `paced_window` (hours: the
-- same harvest paced to stay under any per-minute count, e.g. one secret every few minutes all afternoon), each
-- with its own threshold. A principal's reads of secrets it rotates (PutSecretValue / UpdateSecretVersionStage on
-- the same secret: a rotation function at work) are not harvesting and never count.
-- A burst may start up to `burst` (`paced_window`) before its bucket; it is reported for the bucket in which it
-- crosses. Each $window bucket is judged with its own lookback [bucket - lookback, bucket), as the scheduled run
-- at its end would: a secret read in the lookback of the bucket is familiar, however long the run. The lookback
-- comes from the hourly rollups (`hourly`, one row per secret a call names) up to the hour in which the
-- bucket's `burst` could start, and so do the slow scale's older first reads (a rollup row keeps the first
-- read of its hour: exact); from that hour on, from the raw events (previous reads by time). Raw events are read
-- only for the principals the rollups say could fire in a bucket of the run (`candidates`: most principals read
-- only familiar secrets, so a scheduled run usually reads none), and for those exactly as before.
WITH past_calls AS (  -- the lookback and the run's hours from the hourly rollups (same filters): per hour, caller and secret
    SELECT
        hour,
        caller_arn AS principal_arn,
        secret_name(secret_id) AS secret_name,
        any_value(secret_id) AS secret,
        bool_or(list_contains($read_events, event_name) AND secret_id IS NOT NULL) AS is_read,
        bool_or(list_contains($rotation_events, event_name) AND secret_id IS NOT NULL) AS is_rotation,
        -- could be discovery (the rollup's secret_id is not the raw secret_ids: either BatchGetSecretValue counts)
        bool_or(event_name IN ('ListSecrets', 'BatchGetSecretValue')) AS may_discover,
        min(first_seen) FILTER (WHERE list_contains($read_events, event_name)) AS first_read,
        any_value(event_name) FILTER (WHERE list_contains($read_events, event_name)) AS read_event,
        any_value(recipient_account_id) AS recipient_account_id,
        any_value(aws_region) AS aws_region
    FROM hourly
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND caller_arn IS NOT NULL
      AND error_code IS NULL
      AND hour >= time_bucket($window, $since) - $lookback
      AND hour < $until
    GROUP BY hour, caller_arn, secret_name(secret_id)
),

-- Which principals could fire, from the rollups alone (an exact superset; only their raw calls are read).
-- Scale G = greatest($burst, $paced_window). A secret counted for bucket b (a raw first read, or an older first
-- read >= b - $paced_window) is read in an hour of [trunc(b - G), b + $window) (`hourly` has a row for every
-- secret of a call's secret_ids, with exact first_seen) and in no hour of
-- [b - $lookback, trunc(b - G)) (such a read is < b - G: its secret is familiar to raw_first_reads and too old for
-- older_first_reads); i.e. its first read hour h in that range has previous_hour NULL or < b - $lookback.
-- Each secret name is counted at most once per bucket while $lookback >= $burst + 1 hour (a later raw read's
-- previous read lies within the lookback), so fewer such secrets than either threshold cannot cross it.
-- A newcomer has no Secrets Manager hour in [b - $lookback, trunc(b - $burst)) and a discovery call
-- (ListSecrets or BatchGetSecretValue) in [trunc(b - $burst), b + $window); rotations only remove reads.
earlier_reads AS (  -- per principal and secret, its last read hour before the first bucket's scale G starts
    SELECT principal_arn, secret_name, max(hour) AS last_hour
    FROM past_calls
    WHERE is_read
      AND hour < date_trunc('hour', time_bucket($window, $since) - greatest($burst, $paced_window))
    GROUP BY principal_arn, secret_name
),

read_hours AS (  -- hours a principal read a secret after not reading it for long enough to be unfamiliar to a bucket
    SELECT principal_arn, secret_name, hour, previous_hour
    FROM (
        SELECT
            r.principal_arn,
            r.secret_name,
            r.hour,
            -- the previous read hour: an earlier one in this range, else the last one before it
            coalesce(lag(r.hour) OVER (PARTITION BY r.principal_arn, r.secret_name ORDER BY r.hour), e.last_hour)
                AS previous_hour
        FROM past_calls AS r
        LEFT JOIN earlier_reads AS e USING (principal_arn, secret_name)
        WHERE r.is_read
          AND r.hour >= date_trunc('hour', time_bucket($window, $since) - greatest($burst, $paced_window))
    )
    -- a bucket b this hour counts for has b < hour + G + 1 hour, so previous_hour < b - $lookback needs this
    WHERE previous_hour IS NULL
       OR previous_hour < hour + greatest($burst, $paced_window) + to_hours(1) - $lookback
),

rollup_buckets AS (  -- the run's buckets per principal, as judged_buckets finds them in the raw calls
    SELECT DISTINCT principal_arn, time_bucket($window, hour) AS bucket
    FROM past_calls
    WHERE hour >= date_trunc('hour', $since)
),

unfamiliar_counts AS (  -- per bucket: secrets that may be unfamiliar to it (their first read hour in its range)
    SELECT b.principal_arn, b.bucket
    FROM rollup_buckets AS b
    JOIN read_hours AS r USING (principal_arn)
    WHERE r.hour >= date_trunc('hour', b.bucket - greatest($burst, $paced_window))
      AND r.hour < b.bucket + $window
      AND (r.previous_hour IS NULL OR r.previous_hour < b.bucket - $lookback)
    GROUP BY b.principal_arn, b.bucket
    HAVING count(DISTINCT r.secret_name) >= least($min_distinct_secrets, $paced_min_distinct_secrets)
        OR $lookback < $burst + to_hours(1)
),

candidates AS (  -- enough secrets that may be unfamiliar, or a newcomer that may discover
    SELECT principal_arn FROM unfamiliar_counts
    UNION
    SELECT b.principal_arn
    FROM rollup_buckets AS b
    SEMI JOIN past_calls AS d
        ON d.principal_arn = b.principal_arn
        AND d.may_discover
        AND d.hour >= date_trunc('hour', b.bucket - $burst)
        AND d.hour < b.bucket + $window
    ANTI JOIN past_calls AS p
        ON p.principal_arn = b.principal_arn
        AND p.hour >= b.bucket - $lookback
        AND p.hour < date_trunc('hour', b.bucket - $burst)
    WHERE $history_start <= b.bucket - $lookback
),

sm_calls AS (  -- the candidates' calls, from the hour in which the run's first bucket's burst could start
    SELECT
        event_id,
        event_time,
        event_name,
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,  -- see queries/README.md
        recipient_account_id,
        aws_region,
        source_ip,
        secret_ids,
        -- discovery: ListSecrets, or BatchGetSecretValue by filter (it names no secret id)
        event_name = 'ListSecrets' OR (event_name = 'BatchGetSecretValue' AND secret_ids IS NULL) AS is_discovery,
        list_contains($read_events, event_name) AS is_read
    FROM events
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND caller_arn(principal_arn, session_issuer_arn) IS NOT NULL
      AND error_code IS NULL
      AND event_time >= date_trunc('hour', time_bucket($window, $since) - $burst)
      AND event_time < $until
      AND caller_arn(principal_arn, session_issuer_arn) IN (SELECT principal_arn FROM candidates)
),

secret_refs AS (  -- one row per (call, secret it names), a call naming none keeps one row; compared by name
    SELECT
        c.*,
        s.secret,
        secret_name(s.secret) AS secret_name
    FROM sm_calls AS c, unnest(coalesce(c.secret_ids, [NULL::VARCHAR])) AS s(secret)
),

secret_reads AS (  -- each read with the principal's previous read of the same secret among the raw calls
    SELECT
        *,
        lag(event_time) OVER (PARTITION BY principal_arn, secret_name ORDER BY event_time, event_id) AS previous_read
    FROM secret_refs
    WHERE is_read AND secret IS NOT NULL
),

rotations AS (  -- a principal rotating a secret: it reads what it rotates (raw calls, then older hours)
    SELECT DISTINCT principal_arn, secret_name, event_time
    FROM secret_refs
    WHERE list_contains($rotation_events, event_name) AND secret IS NOT NULL
    UNION ALL
    SELECT principal_arn, secret_name, hour AS event_time
    FROM past_calls
    WHERE is_rotation
),

judged_buckets AS (  -- each bucket of the run is judged as the scheduled run at its end would judge it
    SELECT DISTINCT principal_arn, time_bucket($window, event_time) AS bucket FROM sm_calls WHERE event_time >= $since
),

raw_first_reads AS (  -- per judged bucket: the raw reads that are first reads in its lookback
    SELECT r.event_id, r.event_time, r.event_name, r.principal_arn, r.recipient_account_id, r.aws_region, r.source_ip,
           r.secret, r.secret_name, b.bucket, false AS from_rollup
    FROM secret_reads AS r
    JOIN judged_buckets AS b USING (principal_arn)
    -- read in the hours of the lookback before the raw calls start: familiar
    ANTI JOIN past_calls AS p
        ON p.principal_arn = r.principal_arn
        AND p.secret_name = r.secret_name
        AND p.is_read
        AND p.hour >= b.bucket - $lookback
        AND p.hour < date_trunc('hour', b.bucket - $burst)
    WHERE r.event_time >= date_trunc('hour', b.bucket - $burst)
      AND r.event_time < b.bucket + $window
      AND (r.previous_read IS NULL OR r.previous_read < b.bucket - $lookback)
),

older_first_reads AS (  -- per judged bucket: first reads in its lookback within the slow scale, before the raw calls
    SELECT
        NULL::VARCHAR AS event_id,
        min(p.first_read) AS event_time,
        any_value(p.read_event) AS event_name,
        p.principal_arn,
        any_value(p.recipient_account_id) AS recipient_account_id,
        any_value(p.aws_region) AS aws_region,
        NULL::VARCHAR AS source_ip,
        any_value(p.secret) AS secret,
        p.secret_name,
        b.bucket,
        true AS from_rollup
    FROM past_calls AS p
    JOIN judged_buckets AS b USING (principal_arn)
    WHERE p.is_read
      AND p.hour >= b.bucket - $lookback
      AND p.hour < date_trunc('hour', b.bucket - $burst)
    GROUP BY p.principal_arn, p.secret_name, b.bucket
    HAVING min(p.first_read) >= b.bucket - $paced_window
),

unfamiliar_reads AS (  -- first reads of the bucket's reach, less a rotating principal's reads of what it rotates
    SELECT u.*
    FROM (SELECT * FROM raw_first_reads UNION ALL SELECT * FROM older_first_reads) AS u
    ANTI JOIN rotations AS o
        ON o.principal_arn = u.principal_arn
        AND o.secret_name = u.secret_name
        AND o.event_time >= date_trunc('hour', u.bucket - greatest($burst, $paced_window))
        AND o.event_time < u.bucket + $window
),

burst_counts AS (  -- secrets first read within the trailing `burst` / `paced_window` ending at each first read
    SELECT
        *,
        count(*) OVER (
            PARTITION BY principal_arn, bucket ORDER BY event_time RANGE BETWEEN $burst PRECEDING AND CURRENT ROW
        ) AS unfamiliar_in_burst,
        count(*) OVER (
            PARTITION BY principal_arn, bucket ORDER BY event_time RANGE BETWEEN $paced_window PRECEDING AND CURRENT ROW
        ) AS unfamiliar_paced
    FROM unfamiliar_reads
),

burst_triggers AS (  -- per scale, the first read of the bucket where its count crosses its threshold
    SELECT principal_arn, bucket, 'mass_read_of_unfamiliar_secrets' AS reason, $burst AS scale, min(event_time) AS crossed_at
    FROM burst_counts
    WHERE unfamiliar_in_burst >= $min_distinct_secrets
      AND event_time >= bucket
    GROUP BY principal_arn, bucket
    UNION ALL
    SELECT principal_arn, bucket, 'paced_read_of_unfamiliar_secrets' AS reason, $paced_window AS scale,
           min(event_time) AS crossed_at
    FROM burst_counts
    WHERE unfamiliar_paced >= $paced_min_distinct_secrets
      AND event_time >= bucket
    GROUP BY principal_arn, bucket
),

burst_evidence AS (  -- the reads of the crossing window, per scale that crossed
    SELECT b.*, t.reason
    FROM burst_counts AS b
    JOIN burst_triggers AS t USING (principal_arn, bucket)
    WHERE b.event_time >= t.crossed_at - t.scale
),

newcomers AS (  -- per judged bucket: principals without any Secrets Manager call in [bucket - lookback, bucket - burst)
    -- (only meaningful once the lake holds a full lookback: while it warms up, everyone looks new)
    SELECT j.principal_arn, j.bucket
    FROM judged_buckets AS j
    ANTI JOIN sm_calls AS c
        ON c.principal_arn = j.principal_arn
        AND c.event_time >= j.bucket - $lookback
        AND c.event_time < j.bucket - $burst
    ANTI JOIN past_calls AS p
        ON p.principal_arn = j.principal_arn
        AND p.hour >= j.bucket - $lookback
        AND p.hour < date_trunc('hour', j.bucket - $burst)
    WHERE $history_start <= j.bucket - $lookback
),

newcomer_calls AS (
    SELECT c.*, n.bucket
    FROM sm_calls AS c
    JOIN newcomers AS n USING (principal_arn)
    WHERE c.event_time >= n.bucket - $burst
      AND c.event_time < n.bucket + $window
),

discovering_newcomers AS (  -- reported by the bucket in which discovery + enough reads are first complete
    SELECT principal_arn, bucket
    FROM newcomer_calls
    GROUP BY principal_arn, bucket
    HAVING bool_or(is_discovery)
       AND count(*) FILTER (WHERE is_read) >= $new_principal_min_reads
       AND greatest(
           min(event_time) FILTER (WHERE is_discovery),
           list_sort(list(event_time) FILTER (WHERE is_read))[$new_principal_min_reads]
       ) >= bucket
),

newcomer_evidence AS (
    SELECT r.*, d.bucket, NULL::BIGINT AS unfamiliar_in_burst, NULL::BIGINT AS unfamiliar_paced,
           'first_seen_principal_discovery' AS reason
    FROM secret_refs AS r
    JOIN discovering_newcomers AS d USING (principal_arn)
    WHERE r.event_time >= d.bucket - $burst
      AND r.event_time < d.bucket + $window
      AND (r.is_discovery OR r.is_read)
),

evidence AS (
    SELECT * FROM burst_evidence
    UNION ALL BY NAME
    SELECT * FROM newcomer_evidence
)

SELECT
    principal_arn,
    any_value(recipient_account_id) AS account_id,
    mode(aws_region) AS region,
    -- one secret => name it; many => the list below carries them
    CASE WHEN count(DISTINCT secret_name) = 1 THEN any_value(secret) END AS resource_arn,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    -- a first read from the rollups stands for one read (its event id is in the lake, not in the rollup)
    count(DISTINCT event_id) + count(*) FILTER (WHERE from_rollup) AS event_count,
    count(DISTINCT secret_name) AS distinct_secrets,
    max(unfamiliar_in_burst) AS max_unfamiliar_in_burst,
    max(unfamiliar_paced) FILTER (WHERE reason = 'paced_read_of_unfamiliar_secrets') AS max_unfamiliar_paced,
    list_sort(list(DISTINCT reason)) AS reasons,
    list_sort(list(DISTINCT event_name)) AS operations,
    list_slice(list_sort(list(DISTINCT secret) FILTER (WHERE secret IS NOT NULL)), 1, $max_listed) AS secrets,
    list_sort(list(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL)) AS source_ips
FROM evidence
GROUP BY principal_arn, bucket
ORDER BY first_seen
