-- Why: a key policy is the last word on who may use a key. A statement that allows "*" (or {"AWS": "*"}),
-- or an account outside the trusted set, without a condition that pins the caller to our organization or
-- accounts, exposes everything encrypted under the key (T1098 account manipulation, exfiltration by sharing
-- the key, T1537). CreateGrant to a grantee outside the trusted accounts does the same without touching the
-- policy. The policy document sits as JSON text inside requestParameters.policy (PutKeyPolicy, CreateKey);
-- it is parsed here statement by statement. The key's own account is always trusted. One finding per caller
-- and key per $window bucket (the bucket a scheduled run judges).
-- The window's calls come from the raw events, read only for the event names the run's hourly rollups hold.
WITH policy_calls AS (
    SELECT
        event_id,
        event_time,
        time_bucket($window, event_time) AS bucket,
        event_name,
        principal_arn,  -- the session as recorded, not caller_arn(): a one-shot action (queries/README.md)
        coalesce(key_arn, key_id) AS key_arn,
        recipient_account_id,
        aws_region,
        source_ip,
        request_parameters
    FROM events
    -- names of the policy and grant calls the run's hourly rollups hold (a superset: each call is counted in the rollup of
    -- its hour, and those hours cover [$since, $until)); none, the usual case: the scan is skipped
    SEMI JOIN (SELECT event_name FROM hourly WHERE event_source = 'kms.amazonaws.com' AND error_code IS NULL
               AND list_contains($policy_events, event_name) AND hour >= date_trunc('hour', $since) AND hour < $until)
        USING (event_name)
    WHERE event_source = 'kms.amazonaws.com'
      AND error_code IS NULL
      AND event_time >= $since
      AND event_time < $until
),

statements AS (  -- one row per policy statement (Statement may be an array or a single object)
    SELECT
        c.*,
        unnest(
            CASE json_type(json_extract(p.policy, '$.Statement'))
                WHEN 'ARRAY' THEN json_extract(p.policy, '$.Statement[*]')
                WHEN 'OBJECT' THEN [json_extract(p.policy, '$.Statement')]
                ELSE []
            END
        ) AS stmt
    FROM policy_calls AS c,
        LATERAL (SELECT try_cast(json_extract_string(c.request_parameters, '$.policy') AS JSON) AS policy) AS p
    WHERE p.policy IS NOT NULL
),

statement_principals AS (  -- the AWS principals an Allow statement grants ("*" for NotPrincipal)
    SELECT
        s.* EXCLUDE (request_parameters),
        json_extract_string(s.stmt, '$.Sid') AS sid,
        list_transform(
            flatten(list_transform(json_extract(s.stmt, '$.Condition.*'), lambda o: json_keys(o))),
            lambda k: lower(k)
        ) AS condition_keys,
        unnest(
            CASE
                WHEN json_extract(s.stmt, '$.NotPrincipal') IS NOT NULL THEN ['*']
                WHEN json_type(json_extract(s.stmt, '$.Principal')) = 'VARCHAR'
                    THEN [json_extract_string(s.stmt, '$.Principal')]
                WHEN json_type(json_extract(s.stmt, '$.Principal.AWS')) = 'ARRAY'
                    THEN json_extract_string(s.stmt, '$.Principal.AWS[*]')
                WHEN json_type(json_extract(s.stmt, '$.Principal.AWS')) = 'VARCHAR'
                    THEN [json_extract_string(s.stmt, '$.Principal.AWS')]
                ELSE []
            END
        ) AS granted
    FROM statements AS s
    WHERE json_extract_string(s.stmt, '$.Effect') = 'Allow'
),

policy_exposures AS (
    SELECT
        *,
        CASE WHEN granted = '*' THEN 'public' ELSE 'external_account' END AS exposure,
        CASE WHEN granted = '*' THEN NULL
             WHEN granted LIKE 'arn:%' THEN split_part(granted, ':', 5)
             ELSE granted
        END AS granted_account
    FROM statement_principals
    WHERE NOT list_has_any(condition_keys, list_transform($restricting_condition_keys, lambda k: lower(k)))
),

grant_exposures AS (  -- CreateGrant: the grantee's account is the ARN's, or the leading account of a service id
    SELECT
        c.* EXCLUDE (request_parameters),
        NULL AS sid,
        json_extract_string(c.request_parameters, '$.granteePrincipal') AS granted,
        'grant' AS exposure,
        coalesce(
            nullif(split_part(json_extract_string(c.request_parameters, '$.granteePrincipal'), ':', 5), ''),
            nullif(regexp_extract(json_extract_string(c.request_parameters, '$.granteePrincipal'), '^([0-9]+):', 1), '')
        ) AS granted_account
    FROM policy_calls AS c
    WHERE c.event_name = 'CreateGrant'
),

exposures AS (
    SELECT event_id, event_time, bucket, event_name, principal_arn, key_arn, recipient_account_id, aws_region,
           source_ip, sid, granted, exposure, granted_account
    FROM policy_exposures
    UNION ALL
    SELECT event_id, event_time, bucket, event_name, principal_arn, key_arn, recipient_account_id, aws_region,
           source_ip, sid, granted, exposure, granted_account
    FROM grant_exposures
),

untrusted AS (
    SELECT *
    FROM exposures
    WHERE exposure = 'public'
       OR (
           granted_account IS NOT NULL
           AND granted_account <> coalesce(split_part(key_arn, ':', 5), recipient_account_id)
           AND granted_account <> recipient_account_id
           AND NOT list_contains($trusted_accounts, granted_account)
       )
)

SELECT
    principal_arn,
    key_arn AS resource_arn,
    any_value(recipient_account_id) AS account_id,
    any_value(aws_region) AS region,
    CASE WHEN bool_or(exposure = 'public') THEN 'critical' END AS severity,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(DISTINCT event_id) AS event_count,
    list_sort(list(DISTINCT exposure)) AS exposures,
    list_sort(list(DISTINCT granted)) AS granted_principals,
    list_sort(list(DISTINCT sid) FILTER (WHERE sid IS NOT NULL)) AS statement_sids,
    list_sort(list(DISTINCT event_name)) AS event_names,
    list_sort(list(DISTINCT source_ip)) AS source_ips
FROM untrusted
GROUP BY principal_arn, key_arn, bucket
ORDER BY first_seen
