-- Why: bring-your-own-key attacks encrypt the victim's data under a key the attacker owns: re-encrypt ciphertext
-- to it (ransomware: only the attacker can decrypt now, T1486), point a secret at it (every later secret value is
-- readable by the key's owner, T1537), or have S3 / EBS / an application generate data keys under it. None of this
-- touches our keys, so key-centred detections miss it: this one looks at the *destination* key. A key belongs to
-- the account in its ARN (a key of another account can only be named by ARN); it is foreign when that account is
-- outside the trusted set. Three shapes, calls by our accounts only:
--   re_encrypt   ReEncrypt whose requestParameters.destinationKeyId is a foreign key
--   secret_key   CreateSecret / UpdateSecret / ReplicateSecretToRegions setting kmsKeyId (or a replica's kmsKeyId)
--                to a foreign key
--   data_key     GenerateDataKey* / Encrypt under a foreign key (also when S3 or EBS call it for us)
-- The first two always page. Data keys under a partner's key that our account has used on at least
-- $established_min_days days of the lookback are an established integration and stay quiet. One finding per
-- (who, foreign key) and $window bucket, judged against the bucket's own lookback.
-- Which calls can matter is decided from the hourly rollups of the run's hours (event name, caller account and key
-- are their group columns): raw events are read only for the event names of the first two shapes seen in the run,
-- and for the data keys of (our account, foreign key) groups not established.
WITH run_groups AS (  -- the run's successful calls per group, each tagged with its shape (the first that matches)
    SELECT
        event_source,
        event_name,
        caller_account_id,
        kms_key,
        time_bucket($window, hour) AS bucket,
        CASE
            WHEN event_source = 'kms.amazonaws.com' AND list_contains($reencrypt_events, event_name) THEN 're_encrypt'
            WHEN event_source = 'secretsmanager.amazonaws.com' AND list_contains($secret_key_events, event_name)
                THEN 'secret_key'
            WHEN event_source = 'kms.amazonaws.com' AND list_contains($use_events, event_name) THEN 'data_key'
        END AS how
    FROM hourly
    WHERE error_code IS NULL
      AND hour >= date_trunc('hour', $since)
      AND hour < $until
),

data_key_groups AS (  -- data keys our accounts generated under a foreign key, per bucket (the bulk, under our own
    -- keys, dropped here)
    SELECT DISTINCT caller_account_id AS caller_account, kms_key AS foreign_key, event_name, bucket
    FROM run_groups
    WHERE how = 'data_key'
      AND kms_key LIKE 'arn:%:kms:%'
      AND NOT list_contains($trusted_accounts, split_part(kms_key, ':', 5))
      AND list_contains($trusted_accounts, caller_account_id)
),

established AS (  -- data-key pairs (our account, foreign key) used on enough days of each judged bucket's lookback
    -- (the lookback from the hourly rollups, same filters)
    SELECT j.caller_account, j.foreign_key, j.bucket
    FROM (SELECT DISTINCT caller_account, foreign_key, bucket FROM data_key_groups) AS j
    JOIN hourly AS h
        ON h.caller_account_id = j.caller_account
        AND h.kms_key = j.foreign_key
        AND h.hour >= j.bucket - $lookback
        AND h.hour < j.bucket
    WHERE $history_start <= j.bucket - $lookback
      AND h.event_source = 'kms.amazonaws.com'
      AND list_contains($use_events, h.event_name)
      AND h.error_code IS NULL
    GROUP BY ALL
    HAVING count(DISTINCT date_trunc('day', h.hour)) >= $established_min_days
),

shaped AS (  -- the raw calls of those groups (none: the scans are skipped), each with its group's shape
    SELECT e.*, g.how
    FROM events AS e
    JOIN (SELECT DISTINCT event_source, event_name, how FROM run_groups WHERE how <> 'data_key') AS g
        USING (event_source, event_name)
    WHERE e.error_code IS NULL
      AND e.event_time >= $since
      AND e.event_time < $until
    UNION ALL
    SELECT e.*, 'data_key' AS how
    FROM events AS e
    SEMI JOIN (SELECT caller_account, foreign_key, event_name FROM data_key_groups ANTI JOIN established
               USING (caller_account, foreign_key, bucket)) AS c
        ON c.caller_account = e.principal_account_id
        AND c.foreign_key = coalesce(e.key_arn, e.key_id)
        AND c.event_name = e.event_name
    WHERE e.event_source = 'kms.amazonaws.com'
      AND e.error_code IS NULL
      AND e.event_time >= $since
      AND e.event_time < $until
),

calls AS (  -- the target keys of each shape; JSON is read only for the calls of the shape that needs it
    SELECT event_time, principal_arn, session_issuer_arn, invoked_by, principal_account_id, recipient_account_id,
           aws_region, event_name, how, key_arn,
           -- CreateSecret names its secret only in requestParameters.name / responseElements.arn
           CASE WHEN how = 'secret_key' THEN coalesce(secret_id, json_extract_string(response_elements, '$.arn'),
                                                      json_extract_string(request_parameters, '$.name')) END AS secret_id,
           CASE how
               WHEN 're_encrypt' THEN [json_extract_string(request_parameters, '$.destinationKeyId')]
               WHEN 'secret_key' THEN list_concat(
                   [json_extract_string(request_parameters, '$.kmsKeyId')],
                   coalesce(json_extract_string(request_parameters, '$.addReplicaRegions[*].kmsKeyId'), [])
               )
               ELSE [coalesce(key_arn, key_id)]  -- as the rollups name a key
           END AS target_keys
    FROM shaped
),

foreign_uses AS (  -- each call with a foreign target key, made by one of our accounts
    SELECT
        c.event_time,
        time_bucket($window, c.event_time) AS bucket,
        actor(c.principal_arn, c.session_issuer_arn, c.invoked_by, c.principal_account_id) AS principal_arn,
        c.principal_account_id AS caller_account,
        c.recipient_account_id,
        c.aws_region,
        c.event_name,
        c.how,
        c.key_arn,
        c.secret_id,
        t.target_key AS foreign_key,
        split_part(t.target_key, ':', 5) AS key_account
    FROM calls AS c, unnest(c.target_keys) AS t(target_key)
    WHERE t.target_key LIKE 'arn:%:kms:%'
      AND NOT list_contains($trusted_accounts, split_part(t.target_key, ':', 5))
      AND list_contains($trusted_accounts, c.principal_account_id)
),

judged AS (
    SELECT u.*
    FROM foreign_uses AS u
    LEFT JOIN established AS e USING (caller_account, foreign_key, bucket)
    WHERE (u.how <> 'data_key' OR e.bucket IS NULL)
)

SELECT
    principal_arn,
    foreign_key AS resource_arn,
    any_value(key_account) AS key_account,
    any_value(recipient_account_id) AS account_id,
    any_value(aws_region) AS region,
    list_sort(list(DISTINCT how)) AS how,
    list_sort(list(DISTINCT event_name)) AS event_names,
    list_sort(list(DISTINCT key_arn) FILTER (WHERE how = 're_encrypt' AND key_arn IS NOT NULL))[:$max_listed]
        AS source_keys,
    list_sort(list(DISTINCT secret_id) FILTER (WHERE how = 'secret_key' AND secret_id IS NOT NULL))[:$max_listed]
        AS secrets,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) AS event_count
FROM judged
GROUP BY principal_arn, foreign_key, bucket
ORDER BY first_seen
