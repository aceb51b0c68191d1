-- Why: a secret whose rotation fails (or is abandoned) keeps its old credential alive past its planned
-- lifetime, and an attacker who wants a stolen credential to stay valid turns rotation off
-- (CancelRotateSecret) or breaks the rotation function. Secrets Manager reports failures as service events
-- (eventType AwsServiceEvent) with no caller identity: the secret is named only in additionalEventData /
-- serviceEventDetails / the requestID ("Rotation-<secret arn>-<uuid>"), so it is recovered from there.
-- RotationSucceeded / RotationStarted and failed CancelRotateSecret calls are not findings. One finding per
-- secret and kind per $window bucket (the bucket a scheduled run judges).
WITH rotation_events AS (
    SELECT
        event_id,
        event_time,
        time_bucket($window, event_time) AS bucket,
        event_name,
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,  -- see queries/README.md
        coalesce(recipient_account_id, principal_account_id) AS account_id,
        aws_region,
        error_message,
        coalesce(
            secret_id,
            json_extract_string(additional_event_data, '$.SecretId'),
            json_extract_string(additional_event_data, '$.ARN'),
            json_extract_string(service_event_details, '$.SecretId'),
            json_extract_string(service_event_details, '$.secretId'),
            regexp_extract(request_id, '(arn:[^:]+:secretsmanager:[^:]*:[^:]*:secret:.*)-[0-9a-fA-F-]{36}$', 1)
        ) AS secret,
        CASE WHEN list_contains($failure_events, event_name) THEN 'rotation_failed' ELSE 'rotation_disabled' END
            AS finding_kind
    FROM events
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND event_time >= $since
      AND event_time < $until
      AND (
          list_contains($failure_events, event_name)
          OR (list_contains($disable_events, event_name) AND error_code IS NULL)
      )
)

SELECT
    secret AS resource_arn,
    finding_kind,
    -- null for service events: Secrets Manager itself reported the failure
    any_value(principal_arn) AS principal_arn,
    any_value(account_id) AS account_id,
    any_value(aws_region) AS region,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) AS event_count,
    list_sort(list(DISTINCT event_name)) AS operations,
    list_sort(list(DISTINCT error_message) FILTER (WHERE error_message IS NOT NULL)) AS error_messages
FROM rotation_events
GROUP BY secret, finding_kind, bucket
ORDER BY first_seen
