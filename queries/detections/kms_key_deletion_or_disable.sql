-- Why: deleting or disabling a KMS key (or its imported material) makes everything encrypted under it
-- unreadable: it is a ransomware / destruction move (T1485, T1486) and a way to blind key-based controls.
-- Turning rotation off weakens the key quietly. Only successful calls count (a denied attempt is
-- access_denied_storm's business); principals listed in `allowed_principals` (a key-lifecycle automation
-- role, matched as the session or its role) are expected to do this and stay quiet. One finding per caller
-- session, key and action per $window bucket (the bucket a scheduled run judges), so one run over a long
-- range finds what the scheduled runs found.
-- The window's calls come from the raw events, read only for the event names the run's hourly rollups hold.
WITH lifecycle_calls AS (
    SELECT
        principal_arn,  -- the session as recorded, not caller_arn(): a one-shot action (queries/README.md)
        session_issuer_arn AS role_arn,
        key_arn,
        recipient_account_id,
        aws_region,
        event_name,
        event_time,
        time_bucket($window, event_time) AS bucket,
        source_ip,
        user_agent,
        try_cast(json_extract_string(request_parameters, '$.pendingWindowInDays') AS INTEGER) AS pending_days
    FROM events
    -- names of the lifecycle calls the run's hourly rollups hold (a superset: each call is counted in the rollup of
    -- its hour, and those hours cover [$since, $until)); none, the usual case: the scan is skipped
    SEMI JOIN (SELECT event_name FROM hourly WHERE event_source = 'kms.amazonaws.com' AND error_code IS NULL
               AND list_contains($delete_events, event_name) AND hour >= date_trunc('hour', $since) AND hour < $until)
        USING (event_name)
    WHERE event_source = 'kms.amazonaws.com'
      AND error_code IS NULL
      AND event_time >= $since
      AND event_time < $until
),

not_allowed AS (
    SELECT *
    FROM lifecycle_calls
    WHERE NOT list_has_any($allowed_principals, [principal_arn, role_arn])
)

SELECT
    principal_arn,
    key_arn AS resource_arn,
    any_value(recipient_account_id) AS account_id,
    any_value(aws_region) AS region,
    event_name,
    CASE WHEN list_contains($critical_events, event_name) THEN 'critical' END AS severity,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) AS event_count,
    min(pending_days) AS pending_window_days,
    list_sort(list(DISTINCT source_ip)) AS source_ips,
    any_value(role_arn) AS role_arn,
    any_value(user_agent) AS user_agent
FROM not_allowed
GROUP BY principal_arn, key_arn, event_name, bucket
ORDER BY first_seen
