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
WITH crypto AS (  -- the run's calls, from the raw events
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
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($use_events, event_name)
      AND error_code IS NULL
      AND coalesce(key_arn, key_id) LIKE 'arn:%:key/%'
      AND principal_account_id IS NOT NULL
      AND coalesce(principal_type, '') <> 'AWSService'
      AND principal_account_id <> split_part(coalesce(key_arn, key_id), ':', 5)
      AND event_time >= time_bucket($window, $since)
      AND event_time < $until
),

judged_buckets AS (  -- each (caller account, key) pair's calls per bucket of the run
    SELECT caller_account, key_arn, bucket, count(*) AS calls
    FROM crypto
    GROUP BY caller_account, key_arn, bucket
),

pair_buckets AS (  -- the lookback side, from the hourly rollups (same filters): the judged pairs' calls per bucket
    SELECT caller_account_id AS caller_account, kms_key AS key_arn, time_bucket($window, hour) AS bucket,
           sum(events)::BIGINT AS calls
    FROM hourly
    SEMI JOIN (SELECT DISTINCT caller_account, key_arn FROM judged_buckets) AS j
        ON j.caller_account = hourly.caller_account_id AND j.key_arn = hourly.kms_key
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($use_events, event_name)
      AND error_code IS NULL
      AND coalesce(principal_type, '') <> 'AWSService'
      AND hour >= time_bucket($window, $since) - $lookback
      AND hour < $until
    GROUP BY ALL
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

paging AS (
    SELECT *
    FROM judged_pairs
    -- a pair is only "new" once the lake holds a full lookback; an untrusted caller is news from day one
    WHERE (new_pair AND (untrusted OR $history_start <= bucket - $lookback)) OR volume_change
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
    any_value(p.volume_change) AS volume_change,
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
ORDER BY first_seen
