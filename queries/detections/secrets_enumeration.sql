-- Why: stolen credentials are used to harvest every secret they can reach, in minutes (Stratus Red Team's
-- secretsmanager-retrieve-secrets reads 20 secrets in 4 s; BatchGetSecretValue returns up to 20 per call).
-- Public rules count ">= 20 distinct secrets in a few minutes", which pages every time a service that
-- loads its 25 config secrets restarts. Here a secret counts only at its FIRST read by the principal in the
-- lookback + window, so a deploy pipeline reading its usual dozen (or its usual fifty) stays quiet, re-reads
-- of a set already reported are not a new burst, and the same role suddenly reading 20 secrets it never
-- touched fires. Second branch: an identity with no Secrets Manager history that discovers secrets
-- (ListSecrets, or BatchGetSecretValue by filter, which lists and reads in one call) and reads them:
-- discovery + collection by a fresh identity, even below the count.
-- A burst may start up to `burst` before the window; it is reported by the run in which it crosses.
WITH sm_calls AS (
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
      AND event_time >= $baseline_start
      AND event_time < $until
),

secret_refs AS (  -- one row per (call, secret it names), a call naming none keeps one row; compared by name
    SELECT
        c.*,
        s.secret,
        secret_name(s.secret) AS secret_name
    FROM sm_calls AS c, unnest(coalesce(c.secret_ids, [NULL::VARCHAR])) AS s(secret)
),

secret_reads AS (
    SELECT * FROM secret_refs WHERE is_read AND secret IS NOT NULL
),

first_reads AS (  -- each (principal, secret) pair at its first read in lookback + window
    SELECT *
    FROM secret_reads
    QUALIFY row_number() OVER (PARTITION BY principal_arn, secret_name ORDER BY event_time, event_id) = 1
),

unfamiliar_reads AS (  -- first reads that happened after the current burst could have started
    SELECT * FROM first_reads WHERE event_time >= $since - $burst
),

burst_counts AS (  -- secrets first read within the trailing `burst` ending at each first read
    SELECT
        *,
        count(*) OVER (
            PARTITION BY principal_arn ORDER BY event_time RANGE BETWEEN $burst PRECEDING AND CURRENT ROW
        ) AS unfamiliar_in_burst
    FROM unfamiliar_reads
),

burst_triggers AS (  -- first read of the window where the count crosses the threshold
    SELECT principal_arn, min(event_time) AS crossed_at
    FROM burst_counts
    WHERE unfamiliar_in_burst >= $min_distinct_secrets
      AND event_time >= $since
    GROUP BY principal_arn
),

burst_evidence AS (
    SELECT b.*, 'mass_read_of_unfamiliar_secrets' AS reason
    FROM burst_counts AS b
    JOIN burst_triggers AS t USING (principal_arn)
    WHERE b.event_time >= t.crossed_at - $burst
),

newcomers AS (  -- principals without any Secrets Manager call before the current burst could have started
    -- (only meaningful once the lake holds a full lookback: while it warms up, everyone looks new)
    SELECT principal_arn
    FROM sm_calls
    WHERE event_time >= $since - $burst
      AND $history_start <= $baseline_start
    EXCEPT
    SELECT DISTINCT principal_arn FROM sm_calls WHERE event_time < $since - $burst
),

newcomer_calls AS (
    SELECT c.*
    FROM sm_calls AS c
    SEMI JOIN newcomers AS n USING (principal_arn)
    WHERE c.event_time >= $since - $burst
),

discovering_newcomers AS (  -- reported by the run in which discovery + enough reads are first complete
    SELECT principal_arn
    FROM newcomer_calls
    GROUP BY principal_arn
    HAVING bool_or(is_discovery)
       AND count(*) FILTER (WHERE is_read) >= $new_principal_min_reads
       AND greatest(
           min(event_time) FILTER (WHERE is_discovery),
           list_sort(list(event_time) FILTER (WHERE is_read))[$new_principal_min_reads]
       ) >= $since
),

newcomer_evidence AS (
    SELECT r.*, NULL::BIGINT AS unfamiliar_in_burst, 'first_seen_principal_discovery' AS reason
    FROM secret_refs AS r
    SEMI JOIN discovering_newcomers AS d USING (principal_arn)
    WHERE r.event_time >= $since - $burst
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
    count(DISTINCT event_id) AS event_count,
    count(DISTINCT secret_name) AS distinct_secrets,
    max(unfamiliar_in_burst) AS max_unfamiliar_in_burst,
    list_sort(list(DISTINCT reason)) AS reasons,
    list_sort(list(DISTINCT event_name)) AS operations,
    list_slice(list_sort(list(DISTINCT secret) FILTER (WHERE secret IS NOT NULL)), 1, $max_listed) AS secrets,
    list_sort(list(DISTINCT source_ip)) AS source_ips
FROM evidence
GROUP BY principal_arn
ORDER BY first_seen
