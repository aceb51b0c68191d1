-- Why: deleting a secret breaks every workload that reads it (ATT&CK T1485 data destruction / T1531), and
-- with ForceDeleteWithoutRecovery there is no 7-30 day window to RestoreSecret: the value is gone at once.
-- Successful DeleteSecret calls only; the StartSecretVersionDelete / EndSecretVersionDelete service events
-- that follow are bookkeeping, not a second finding. A secret the same principal created shortly before
-- (`ephemeral_max_age`: CI test stacks, Stratus/Terraform teardown) is its own scratch data and stays quiet.
-- One finding per principal and deletion mode per $window bucket (the bucket a scheduled run judges, whose
-- lookback holds the creations); `forced` drives the severity. The window's deletions and the lookback's creations
-- come from the raw events, read only when the hourly rollups show a deletion in the window.
WITH deletion_names AS (  -- the delete calls the hourly rollups saw in the window: an exact superset (they count every
    -- committed event by name and error code)
    SELECT DISTINCT event_name
    FROM hourly
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($delete_events, event_name)
      AND error_code IS NULL
      AND hour > $since - $window  -- hours overlapping the window ($window: whole hours)
      AND hour < $until
      AND last_seen >= $since
),

lifecycle_names AS (  -- what to read: those, and CreateSecret when there are any
    SELECT event_name, true AS deletion FROM deletion_names
    UNION ALL
    SELECT DISTINCT 'CreateSecret' AS event_name, false AS deletion FROM deletion_names
),

lifecycle_calls AS (  -- successful deletions (window) and creations (lookback + window). Joined on its names, the scan
    -- filters rows by them before decoding the JSON, and stops at its first rows when there are none; only plain
    -- filters here (the steps below filter on `deletion`), or DuckDB would filter above the scan
    SELECT
        event_id,
        event_time,
        time_bucket($window, event_time) AS bucket,
        event_name,
        n.deletion,
        -- the caller (queries/README.md); a cross-account caller seen only as AWSAccount: its account
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal_arn,
        principal_arn AS session_arn,
        recipient_account_id,
        aws_region,
        source_ip,
        secret_id,
        -- CreateSecret names the secret in requestParameters.name (its response holds the ARN)
        coalesce(json_extract_string(request_parameters, '$.name'), secret_name(secret_id)) AS secret_name,
        request_parameters
    FROM events
    JOIN lifecycle_names AS n USING (event_name)
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND error_code IS NULL
      AND event_time >= $baseline_start
      AND event_time < $until
),

deletions AS (
    SELECT
        * EXCLUDE (request_parameters, deletion),
        coalesce(try_cast(json_extract_string(request_parameters, '$.forceDeleteWithoutRecovery') AS BOOLEAN), false)
            AS forced,
        try_cast(json_extract_string(request_parameters, '$.recoveryWindowInDays') AS INTEGER) AS recovery_days
    FROM lifecycle_calls
    WHERE deletion AND event_time >= $since
),

recent_creations AS (
    SELECT principal_arn, secret_name, event_time AS created_at
    FROM lifecycle_calls
    WHERE NOT deletion
),

lasting_secrets AS (
    SELECT d.*
    FROM deletions AS d
    ANTI JOIN recent_creations AS c
        ON c.principal_arn = d.principal_arn
        AND c.secret_name = d.secret_name
        AND c.created_at <= d.event_time
        AND c.created_at >= d.event_time - $ephemeral_max_age
        AND c.created_at >= d.bucket - $lookback
)

SELECT
    principal_arn,
    forced,
    -- one secret => name it; several => see `secrets`
    CASE WHEN count(DISTINCT secret_name) = 1 THEN any_value(secret_id) END AS resource_arn,
    any_value(recipient_account_id) AS account_id,
    any_value(aws_region) AS region,
    CASE WHEN forced THEN $forced_severity END AS severity,  -- null: the YAML severity
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) AS event_count,
    count(DISTINCT secret_name) AS distinct_secrets,
    min(recovery_days) AS min_recovery_days,
    list_slice(list_sort(list(DISTINCT secret_id)), 1, $max_listed) AS secrets,
    list_sort(list(DISTINCT source_ip)) AS source_ips,
    list_sort(list(DISTINCT session_arn)) AS sessions
FROM lasting_secrets
GROUP BY principal_arn, forced, bucket
ORDER BY first_seen
