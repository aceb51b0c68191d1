-- Why: a resource policy is how a secret is shared outside its account, and the quietest way to keep access
-- to it (ATT&CK T1098: no IAM change in the victim account, the attacker reads it from their own).
-- PutResourcePolicy records the policy as JSON text inside requestParameters.resourcePolicy; each Allow
-- statement is parsed and flagged when it lets everyone ("*", {"AWS": "*"}, NotPrincipal) or an account
-- outside the trusted set act on the secret WITHOUT a condition that pins the caller (aws:PrincipalOrgID,
-- aws:PrincipalAccount, aws:SourceAccount, ... — the `restricting_condition_keys` setting). An org-scoped
-- "*" (Principal "*" + aws:PrincipalOrgID) is how AWS recommends sharing inside an organization: quiet.
-- Trusted accounts: the `trusted_accounts` setting, else every account that recorded events in the lake.
-- One finding per caller and secret per $window bucket (the bucket a scheduled run judges).
WITH policy_calls AS (
    SELECT
        event_id,
        event_time,
        time_bucket($window, event_time) AS bucket,
        -- the caller (queries/README.md); a cross-account caller seen only as AWSAccount: its account
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal_arn,
        recipient_account_id,
        aws_region,
        secret_id,
        json_extract(request_parameters, '$.resourcePolicy') AS raw_policy,
        coalesce(try_cast(json_extract_string(request_parameters, '$.blockPublicPolicy') AS BOOLEAN), false)
            AS block_public_policy
    FROM events
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($policy_events, event_name)
      AND error_code IS NULL
      AND event_time >= $since
      AND event_time < $until
),

policies AS (  -- CloudTrail keeps the policy as a JSON string; tolerate an already-parsed object too
    SELECT
        * EXCLUDE (raw_policy),
        CASE WHEN json_type(raw_policy) = 'VARCHAR' THEN try_cast(raw_policy ->> '$' AS JSON) ELSE raw_policy END
            AS policy
    FROM policy_calls
),

statements AS (  -- "Statement" may be one object or an array of them
    SELECT
        p.* EXCLUDE (policy),
        unnest(
            CASE
                WHEN json_type(p.policy, '$.Statement') = 'ARRAY' THEN json_extract(p.policy, '$.Statement[*]')
                ELSE [json_extract(p.policy, '$.Statement')]
            END
        ) AS statement
    FROM policies AS p
    WHERE p.policy IS NOT NULL
),

allow_statements AS (
    SELECT
        s.* EXCLUDE (statement),
        json_extract(s.statement, '$.NotPrincipal') IS NOT NULL AS uses_not_principal,
        CASE  -- every AWS principal the statement names: "*", {"AWS": "..."} or {"AWS": [...]}
            WHEN json_type(s.statement, '$.Principal') = 'VARCHAR' THEN [json_extract_string(s.statement, '$.Principal')]
            WHEN json_type(s.statement, '$.Principal.AWS') = 'ARRAY'
                THEN json_extract_string(s.statement, '$.Principal.AWS[*]')
            WHEN json_type(s.statement, '$.Principal.AWS') = 'VARCHAR'
                THEN [json_extract_string(s.statement, '$.Principal.AWS')]
            ELSE []::VARCHAR[]
        END AS aws_principals,
        CASE  -- every condition key under every operator, lower-cased (condition keys are case-insensitive)
            WHEN json_type(s.statement, '$.Condition') = 'OBJECT'
                THEN list_transform(
                    flatten(list_transform(
                        map_values(CAST(json_extract(s.statement, '$.Condition') AS MAP(VARCHAR, JSON))),
                        lambda operands: json_keys(operands)
                    )),
                    lambda k: lower(k)
                )
            ELSE []::VARCHAR[]
        END AS condition_keys
    FROM statements AS s
    WHERE json_extract_string(s.statement, '$.Effect') = 'Allow'
),

exposing AS (  -- principals of an unconditioned Allow that reach beyond the trusted accounts
    SELECT
        a.* EXCLUDE (aws_principals, condition_keys),
        list_filter(
            a.aws_principals,
            lambda p: p = '*' OR NOT list_contains(
                $trusted_accounts,
                CASE WHEN p LIKE 'arn:%' THEN split_part(p, ':', 5) ELSE p END
            )
        ) || CASE WHEN a.uses_not_principal THEN ['NotPrincipal'] ELSE []::VARCHAR[] END AS exposed_to
    FROM allow_statements AS a
    WHERE NOT list_has_any(a.condition_keys, list_transform($restricting_condition_keys, lambda k: lower(k)))
)

SELECT
    principal_arn,
    secret_id AS resource_arn,
    any_value(recipient_account_id) AS account_id,
    any_value(aws_region) AS region,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(DISTINCT event_id) AS event_count,
    list_sort(list_distinct(flatten(list(exposed_to)))) AS exposed_to,
    list_contains(flatten(list(exposed_to)), '*') OR bool_or(uses_not_principal) AS public,
    bool_or(block_public_policy) AS block_public_policy
FROM exposing
WHERE len(exposed_to) > 0
GROUP BY principal_arn, secret_id, bucket
ORDER BY first_seen
