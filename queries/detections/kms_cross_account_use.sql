-- Why: a key shared across accounts is only as safe as the least-guarded account it is shared with. Crypto
-- calls on our key from another account are a data path out of the account (T1537 / T1550; a compromised sibling
-- account pivoting, T1078.004). Cross-account calls are recorded in the key owner's trail with the caller's
-- account in userIdentity.accountId (often type AWSAccount, without an ARN: the finding then names the account).
-- AWS services acting for us are not callers. The detection learns, per (caller account, key) pair and per
-- $window bucket, from the bucket's own lookback [bucket - lookback, bucket):
--   new pair          the pair has no call in the lookback: high when the account is outside the trusted set,
--                     medium for a trusted account (a new integration worth a look)
--   established pair  calls on at least $established_min_days distinct days of the lookback: quiet (a partner's
--                     daily job), unless the bucket's volume exceeds $baseline_factor x its largest past bucket
--                     (and $min_events): a large volume change pages (high if untrusted, else medium)
--   learning pair     seen on fewer days: quiet (it paged on its first use)
-- "New" needs a lake holding a full lookback ($history_start), except for untrusted accounts: news from day one.
-- Which pairs and buckets may page is decided from the hourly rollups (every filter below is one of their group
-- columns, and a KMS call names no secret, so they count each call once); raw events are read only for those.
WITH cross_hours AS (  -- the cross-account calls per pair, event name and hour, from the hourly rollups: the
    -- lookback of each judged bucket, and the run's own hours (their counts are exact; an upper bound when $until
    -- cuts an hour)
    SELECT caller_account_id AS caller_account, kms_key AS key_arn, event_name, hour, sum(events) AS calls
    FROM hourly
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($use_events, event_name)
      AND error_code IS NULL
      AND kms_key LIKE 'arn:%:key/%'
      AND caller_account_id IS NOT NULL
      AND coalesce(principal_type, '') <> 'AWSService'
      AND caller_account_id <> split_part(kms_key, ':', 5)
      AND hour >= time_bucket($window, $since) - $lookback
      AND hour < $until
    GROUP BY ALL
),

pair_buckets AS (  -- each pair's calls per bucket
    SELECT caller_account, key_arn, time_bucket($window, hour) AS bucket, sum(calls)::BIGINT AS calls
    FROM cross_hours
    GROUP BY ALL
),

judged_buckets AS (  -- each pair's calls per bucket of the run
    SELECT *
    FROM pair_buckets
    WHERE bucket >= time_bucket($window, $since)
),

pair_history AS (  -- each judged bucket's pair in its own lookback: days used, largest bucket
    SELECT
        j.caller_account,
        j.key_arn,
        j.bucket,
        count(DISTINCT date_trunc('day', h.bucket)) AS days_used,
        max(h.calls) AS largest_past_bucket
    FROM judged_buckets AS j
    JOIN pair_buckets AS h USING (caller_account, key_arn)
    WHERE h.bucket < j.bucket
      AND h.bucket >= j.bucket - $lookback
    GROUP BY ALL
),

judged_pairs AS (
    SELECT
        j.caller_account,
        j.key_arn,
        j.bucket,
        NOT list_contains($trusted_accounts, j.caller_account) AS untrusted,
        h.caller_account IS NULL AS new_pair,
        coalesce(h.days_used, 0) AS days_used,
        h.largest_past_bucket,
        coalesce(h.days_used, 0) >= $established_min_days
            AND j.calls >= $min_events
            AND j.calls > $baseline_factor * h.largest_past_bucket AS volume_change
    FROM judged_buckets AS j
    LEFT JOIN pair_history AS h USING (caller_account, key_arn, bucket)
),

paging AS (  -- a superset of the pairs that page: volume_change only grows with the calls counted
    SELECT
        *,
        -- a pair is only "new" once the lake holds a full lookback; an untrusted caller is news from day one
        new_pair AND (untrusted OR $history_start <= bucket - $lookback) AS pages_as_new
    FROM judged_pairs
    WHERE pages_as_new OR volume_change
),

candidates AS (  -- the pairs that may page, with the event names they used in the run
    SELECT DISTINCT caller_account, key_arn, event_name
    FROM cross_hours
    SEMI JOIN paging USING (caller_account, key_arn)
    WHERE hour >= time_bucket($window, $since)
),

crypto AS (  -- the run's calls of the candidates, from the raw events (none: the scan is skipped). The semi join
    -- implies the event name, key and account filters of `cross_hours`: each candidate meets them
    SELECT
        principal_account_id AS caller_account,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal_arn,
        principal_id,
        coalesce(key_arn, key_id) AS key_arn,  -- as the rollups name a key
        split_part(coalesce(key_arn, key_id), ':', 5) AS key_account,
        aws_region,
        event_name,
        source_ip,
        event_time,
        time_bucket($window, event_time) AS bucket
    FROM events
    SEMI JOIN candidates AS c
        ON c.caller_account = events.principal_account_id
        AND c.key_arn = coalesce(events.key_arn, events.key_id)
        AND c.event_name = events.event_name
    WHERE event_source = 'kms.amazonaws.com'
      AND error_code IS NULL
      AND coalesce(principal_type, '') <> 'AWSService'
      AND event_time >= time_bucket($window, $since)
      AND event_time < $until
)

SELECT
    r.caller_account,
    -- the one caller when there is one, else the account (AWSAccount callers carry no ARN): never null
    CASE WHEN count(DISTINCT r.principal_arn) = 1 THEN any_value(r.principal_arn) ELSE r.caller_account END
        AS principal_arn,
    r.key_arn AS resource_arn,
    any_value(r.key_account) AS account_id,
    any_value(r.aws_region) AS region,
    CASE WHEN any_value(p.untrusted) THEN 'high' END AS severity,
    any_value(p.untrusted) AS untrusted_account,
    any_value(p.new_pair) AS first_use_in_lookback,
    -- judged again on the calls read (the same count unless $until cuts an hour)
    any_value(p.volume_change) AND count(*) >= $min_events
        AND count(*) > $baseline_factor * any_value(p.largest_past_bucket) AS volume_change,
    any_value(p.days_used) AS days_used_in_lookback,
    any_value(p.largest_past_bucket) AS largest_past_bucket,
    min(r.event_time) AS first_seen,
    max(r.event_time) AS last_seen,
    count(*) AS event_count,
    list_sort(list(DISTINCT r.event_name)) AS event_names,
    list_sort(list(DISTINCT r.principal_id) FILTER (WHERE r.principal_id IS NOT NULL))[:$max_listed] AS principal_ids,
    list_sort(list(DISTINCT r.source_ip) FILTER (WHERE r.source_ip IS NOT NULL))[:$max_listed] AS source_ips
FROM crypto AS r
JOIN paging AS p USING (caller_account, key_arn, bucket)
GROUP BY r.caller_account, r.key_arn, r.bucket
HAVING any_value(p.pages_as_new) OR volume_change
ORDER BY first_seen
