-- Why: every keytrail finding rests on the trail. Stopping it (StopLogging), deleting it, narrowing it
-- (UpdateTrail turning off the organization or multi-region scope) or quietly dropping KMS / Secrets Manager
-- from what it records (PutEventSelectors / PutInsightSelectors with excludeManagementEventSources, advanced
-- selectors with eventSource notEquals, or management events switched off) makes keytrail silent while it
-- reports "no findings" (ATT&CK T1562.008). Successful calls only: a denied attempt changes nothing (it is
-- access_denied_storm's business). No exception for a restart: logging stopped for a maintenance window and
-- started again still left a window unrecorded, so it still alerts (the restart time is shown, not a pardon).
-- One finding per trail, caller and $window bucket.
WITH trail_calls AS (
    SELECT
        event_time,
        time_bucket($window, event_time) AS bucket,
        event_name,
        caller_arn(principal_arn, session_issuer_arn) AS principal_arn,
        recipient_account_id,
        aws_region,
        source_ip,
        user_agent,
        coalesce(
            json_extract_string(request_parameters, '$.name'),
            json_extract_string(request_parameters, '$.trailName')
        ) AS trail,
        request_parameters AS params
    FROM events
    WHERE event_source = 'cloudtrail.amazonaws.com'
      AND (list_contains($watched_events, event_name) OR event_name = 'StartLogging')
      AND error_code IS NULL
      AND event_time >= $since
      AND event_time < $until
),

selectors AS (  -- what a selector call leaves recorded
    SELECT
        *,
        coalesce(json_extract(params, '$.eventSelectors[*]'), []) AS basic,
        coalesce(json_extract(params, '$.advancedEventSelectors[*]'), []) AS advanced
    FROM trail_calls
),

management AS (  -- the advanced selectors that record management events
    SELECT
        *,
        list_filter(advanced, lambda s: list_contains(
            coalesce(json_extract_string(s, '$.fieldSelectors[*].equals[*]'), []), 'Management'
        )) AS advanced_management
    FROM selectors
),

changes AS (
    SELECT
        *,
        CASE
            WHEN event_name = 'StopLogging' THEN 'logging stopped'
            WHEN event_name = 'DeleteTrail' THEN 'trail deleted'
            WHEN event_name = 'UpdateTrail'
                AND json_extract_string(params, '$.isOrganizationTrail') = 'false'
                THEN 'no longer an organization trail'
            WHEN event_name = 'UpdateTrail'
                AND json_extract_string(params, '$.isMultiRegionTrail') = 'false'
                THEN 'no longer multi-region'
            WHEN list_has_any(
                coalesce(json_extract_string(params, '$.eventSelectors[*].excludeManagementEventSources[*]'), []),
                $audited_sources
            ) OR list_has_any(
                flatten(list_transform(advanced_management, lambda s: coalesce(
                    json_extract_string(s, '$.fieldSelectors[*].notEquals[*]'), []
                ))),
                $audited_sources
            ) THEN 'KMS or Secrets Manager events excluded'
            WHEN len(basic) > 0 AND NOT list_contains(list_transform(basic, lambda s: coalesce(
                json_extract_string(s, '$.includeManagementEvents'), 'true'
            )), 'true') THEN 'management events turned off'
            WHEN len(advanced) > 0 AND len(advanced_management) = 0 THEN 'management events turned off'
        END AS change
    FROM management
),

findings AS (
    SELECT
        recipient_account_id AS account_id,
        aws_region AS region,
        trail,
        principal_arn,
        CASE WHEN list_contains(list(change), 'trail deleted') THEN 'critical' END AS severity,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        count(*) AS event_count,
        list_sort(list(DISTINCT change)) AS changes,
        list_sort(list(DISTINCT event_name)) AS event_names,
        list_sort(list(DISTINCT source_ip)) AS source_ips,
        any_value(user_agent) AS user_agent
    FROM changes
    WHERE change IS NOT NULL
    GROUP BY recipient_account_id, aws_region, trail, principal_arn, bucket
),

restarts AS (  -- StartLogging on the same trail after the stop: how long the trail was dark
    SELECT recipient_account_id AS account_id, aws_region AS region, trail, event_time AS restarted_at
    FROM trail_calls
    WHERE event_name = 'StartLogging'
)

SELECT
    f.*,
    min(r.restarted_at) AS restarted_at
FROM findings AS f
LEFT JOIN restarts AS r
    ON r.account_id = f.account_id
    AND r.region = f.region
    AND r.trail = f.trail
    AND r.restarted_at >= f.first_seen
    AND list_contains(f.changes, 'logging stopped')
GROUP BY ALL
ORDER BY f.first_seen
