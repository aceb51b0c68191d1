-- Every call of one principal in the window, oldest first, with its outcome class (ok / denied / error): the
-- timeline of the investigate notebook. A role ARN or name also matches its sessions; a user name its user.
SELECT
    event_time,
    event_source,
    event_name,
    coalesce(key_arn, key_id, secret_id) AS resource,
    coalesce(error_code, 'ok') AS outcome,
    CASE
        WHEN error_code IS NULL THEN 'ok'
        WHEN list_contains($error_codes, error_code) THEN 'denied'
        ELSE 'error'
    END AS outcome_class,
    source_ip,
    user_agent,
    event_id
FROM events
WHERE event_time >= $since
  AND event_time < $until
  AND $principal IN (principal_arn, session_issuer_arn, session_issuer_name, principal_name, invoked_by)
ORDER BY event_time, event_id
