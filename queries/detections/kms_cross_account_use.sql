-- Why: a key shared across accounts is only as safe as the least-guarded account it is shared with. Crypto
-- calls on our key from an account outside the trusted set mean the key policy or a grant lets strangers
-- decrypt our data (T1537 / T1550); a trusted account using the key for the first time in the lookback is a
-- new data path worth a look (a compromised sibling account pivoting, T1078.004). Cross-account calls are
-- recorded in the key owner's trail with the caller's account in userIdentity.accountId (often type
-- AWSAccount, without an ARN). AWS services acting for us are not callers. Each $window bucket is judged with
-- its own lookback (what the pair did in [bucket - lookback, bucket)), one finding per pair and bucket.
WITH crypto AS (
    SELECT
        principal_account_id AS caller_account,
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        principal_id,
        key_arn,
        split_part(key_arn, ':', 5) AS key_account,
        aws_region,
        event_name,
        source_ip,
        event_time,
        time_bucket($window, event_time) AS bucket
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND list_contains($use_events, event_name)
      AND error_code IS NULL
      AND key_arn LIKE 'arn:%:key/%'
      AND principal_account_id IS NOT NULL
      AND coalesce(principal_type, '') <> 'AWSService'
      AND principal_account_id <> split_part(key_arn, ':', 5)
      AND event_time >= $baseline_start
      AND event_time < $until
),

pair_buckets AS (  -- when each (caller account, key) pair was last used in each bucket: the baseline side
    SELECT caller_account, key_arn, bucket, max(event_time) AS last_used
    FROM crypto
    GROUP BY caller_account, key_arn, bucket
),

judged_buckets AS (
    SELECT DISTINCT caller_account, key_arn, bucket FROM crypto WHERE event_time >= $since
),

known_pairs AS (  -- judged buckets whose pair was used in the bucket's own lookback [bucket - lookback, bucket)
    SELECT DISTINCT j.caller_account, j.key_arn, j.bucket
    FROM judged_buckets AS j
    JOIN pair_buckets AS h USING (caller_account, key_arn)
    WHERE h.bucket < j.bucket
      AND h.last_used >= j.bucket - $lookback
),

judged AS (
    SELECT
        r.*,
        NOT list_contains($trusted_accounts, r.caller_account) AS untrusted,
        k.caller_account IS NULL AS new_pair
    FROM crypto AS r
    LEFT JOIN known_pairs AS k USING (caller_account, key_arn, bucket)
    WHERE r.event_time >= $since
)

SELECT
    caller_account,
    CASE WHEN count(DISTINCT principal_arn) = 1 THEN any_value(principal_arn) END AS principal_arn,
    key_arn AS resource_arn,
    any_value(key_account) AS account_id,
    any_value(aws_region) AS region,
    CASE WHEN bool_or(untrusted) THEN 'high' END AS severity,
    bool_or(untrusted) AS untrusted_account,
    bool_or(new_pair) AS first_use_in_lookback,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) AS event_count,
    list_sort(list(DISTINCT event_name)) AS event_names,
    list_sort(list(DISTINCT principal_id) FILTER (WHERE principal_id IS NOT NULL))[:$max_listed] AS principal_ids,
    list_sort(list(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL))[:$max_listed] AS source_ips
FROM judged
-- a pair is only "new" once the lake holds a full lookback; an untrusted caller is news from day one
WHERE untrusted OR (new_pair AND $history_start <= bucket - $lookback)
GROUP BY caller_account, key_arn, bucket
ORDER BY first_seen
