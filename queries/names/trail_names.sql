-- Names the trail itself records, so alerts can say `alias/payments-prod` where CloudTrail says only a key ARN.
-- KMS aliases over time: each CreateAlias / UpdateAlias points an alias (per account and region) at a key from
-- that call until the next call naming the alias (an UpdateAlias moving it, a DeleteAlias ending it); a failed
-- call changed nothing. Secrets Manager names: CreateSecret's name beside the ARN it returned (a secret's name
-- never changes, so it holds at any time).
WITH alias_calls AS (
    SELECT
        event_time,
        event_id,
        event_name,
        recipient_account_id AS account_id,
        aws_region AS region,
        coalesce(split_part(principal_arn, ':', 2), '') AS arn_partition,
        json_extract_string(request_parameters, '$.aliasName') AS alias_name,
        json_extract_string(request_parameters, '$.targetKeyId') AS target
    FROM events
    WHERE event_source = 'kms.amazonaws.com'
      AND event_name IN ('CreateAlias', 'UpdateAlias', 'DeleteAlias')
      AND error_code IS NULL
),

alias_timeline AS (
    SELECT
        *,
        lead(event_time) OVER (
            PARTITION BY account_id, region, alias_name ORDER BY event_time, event_id
        ) AS next_change
    FROM alias_calls
    WHERE alias_name IS NOT NULL
),

aliases AS (
    SELECT
        'key' AS kind,
        CASE
            WHEN target LIKE 'arn:%' THEN target
            ELSE 'arn:' || CASE WHEN arn_partition = '' THEN 'aws' ELSE arn_partition END
                || ':kms:' || region || ':' || account_id || ':key/' || target
        END AS id,
        alias_name AS name,
        event_time AS valid_from,
        next_change AS valid_until
    FROM alias_timeline
    WHERE event_name <> 'DeleteAlias' AND target IS NOT NULL
),

secrets AS (
    SELECT DISTINCT
        'secret' AS kind,
        coalesce(
            json_extract_string(response_elements, '$.arn'), json_extract_string(response_elements, '$.aRN')
        ) AS id,
        json_extract_string(request_parameters, '$.name') AS name,
        CAST(NULL AS TIMESTAMPTZ) AS valid_from,
        CAST(NULL AS TIMESTAMPTZ) AS valid_until
    FROM events
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND event_name = 'CreateSecret'
      AND error_code IS NULL
)

SELECT kind, id, name, valid_from, valid_until FROM aliases
UNION ALL
SELECT kind, id, name, valid_from, valid_until FROM secrets WHERE id IS NOT NULL AND name IS NOT NULL
ORDER BY kind, id, valid_from NULLS FIRST, name
