-- The headline numbers of a window (overview notebook, HTML report): how much happened, how many callers,
-- keys and secrets, and how much was refused ($error_codes) or failed for another reason.
SELECT
    count(*) AS events,
    count(DISTINCT actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id)) AS principals,
    count(DISTINCT key_arn) AS keys,
    len(list_distinct(flatten(list(secret_ids)))) AS secrets,  -- batch reads name several
    count(*) FILTER (list_contains($error_codes, error_code)) AS denied,
    count(*) FILTER (error_code IS NOT NULL AND NOT list_contains($error_codes, error_code)) AS errors
FROM events
WHERE event_time >= $since
  AND audited_service(event_source)
  AND event_time < $until
