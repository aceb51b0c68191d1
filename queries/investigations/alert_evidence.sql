-- The events behind an alert: its principal (or source IP) acting on its resource between its first and last
-- seen ($since/$until, padded by keytrail). keytrail resolves the alert from the outbox in Python and binds its
-- fields here, because this session can read nothing but the lake's events.
WITH evidence AS (
    SELECT *
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND ($principal_arn = '' OR $principal_arn IN (principal_arn, session_issuer_arn, invoked_by))
      AND ($source_ip = '' OR source_ip = $source_ip)
      AND (
          $resource_arn = ''
          OR $resource_arn IN (key_arn, key_id, secret_id)
          OR list_contains(secret_ids, $resource_arn)
      )
)

SELECT
    $alert_id AS alert_id,
    $detection_id AS detection_id,
    event_time,
    actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal,
    event_source,
    event_name,
    coalesce(key_arn, key_id, secret_id) AS resource,
    coalesce(error_code, 'ok') AS outcome,
    to_json(encryption_context)::VARCHAR AS encryption_context,
    source_ip,
    user_agent,
    recipient_account_id,
    event_id
FROM evidence
ORDER BY event_time, event_id
LIMIT $limit
