-- Calls where the caller's account is not the account that owns the key or secret. Sharing a key across an
-- organization is normal; a caller from an account outside $trusted_accounts (default: the accounts whose
-- trails are in the lake) is not. The owner is the account in the resource ARN, else the account whose trail
-- recorded the call. AWS services acting for a caller carry no caller account and are left out.
WITH owned AS (
    SELECT
        *,
        coalesce(
            nullif(split_part(coalesce(key_arn, secret_id), ':', 5), ''), recipient_account_id
        ) AS owner_account_id
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND principal_account_id IS NOT NULL
      AND principal_type IS DISTINCT FROM 'AWSService'
),

crossing AS (
    SELECT
        *,
        list_contains($trusted_accounts, principal_account_id) AS caller_trusted
    FROM owned
    WHERE principal_account_id <> owner_account_id
)

SELECT
    principal_account_id AS caller_account_id,
    caller_trusted,
    actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
    owner_account_id,
    event_source,
    event_name,
    coalesce(key_arn, key_id, secret_id) AS resource,
    coalesce(error_code, 'ok') AS outcome,
    -- a cross-account call is recorded in both accounts' trails with one sharedEventID
    count(DISTINCT coalesce(shared_event_id, event_id)) AS call_count,
    count(*) AS event_count,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM crossing
WHERE NOT ($untrusted_only AND caller_trusted)
GROUP BY ALL
ORDER BY caller_trusted, first_seen, principal
