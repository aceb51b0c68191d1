-- Why: replicating a secret copies its value into another region, where it can be read under that region's
-- access paths (a forgotten VPC endpoint, weaker SCPs, nobody watching): a quiet way to carry production secrets
-- off (T1537 / T1555.006). ReplicateSecretToRegions to a region where the whole trail shows no activity in the
-- lookback (no account of the org works there) is news; reads of that replica in that region afterwards make it
-- an exfiltration in progress. Replicating to a region the org already works in (disaster recovery, terraform
-- adding a replica next to the services that use it) stays quiet. RemoveRegionsFromReplication and
-- StopReplicationToReplica (a replica cut loose as a standalone copy, or the trace of a replica removed) are
-- reported at a lower severity. The replica regions come from requestParameters.addReplicaRegions[].region
-- (removeReplicaRegions[] for a removal; StopReplicationToReplica is called in the replica's own region).
-- A bucket b is judged exactly as a run at its end would: a replica of secret S in region R is suspicious when
-- it was created in [b - $lookback, end of b) and no event at all was recorded in R between b - $lookback and
-- its creation; the bucket's replication calls and reads of S in R are one finding per (secret, region, b).
-- Where things come from: a region's activity from the hourly rollups; the replication calls (lookback + window),
-- the window's reads in replica regions and its removals from the raw events, each read only for the call names
-- (and regions) the rollups show there.
WITH replication_names AS (  -- the replication calls the hourly rollups saw in lookback + window, by name: an exact
    -- superset (the rollups count every committed event by hour, region, name and error code). Joined on such names,
    -- each raw read below filters rows by them before decoding the JSON, and stops at its first rows when there are none
    SELECT DISTINCT event_name
    FROM hourly
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($replicate_events, event_name)
      AND error_code IS NULL
      AND hour > $baseline_start - $window  -- hours overlapping [$baseline_start, $until) ($window: whole hours)
      AND hour < $until
      AND last_seen >= $baseline_start
),

replication_calls AS (
    SELECT
        event_time,
        -- the secret's ARN as the response spells it (ReplicateSecretToRegions: aRN; CreateSecret: arn), else the
        -- reference of the request (CreateSecret names a new secret only by its name)
        coalesce(json_extract_string(response_elements, '$.aRN'), json_extract_string(response_elements, '$.arn'),
                 secret_id, json_extract_string(request_parameters, '$.name')) AS secret_ref,
        json_extract_string(request_parameters, '$.addReplicaRegions[*].region') AS regions,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS principal_arn,
        recipient_account_id
    FROM events
    SEMI JOIN replication_names USING (event_name)
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND error_code IS NULL
      AND event_time >= $baseline_start
      AND event_time < $until
),

replica_calls AS (  -- every (secret, replica region) a replication call created
    SELECT c.event_time, secret_name(c.secret_ref) AS secret, c.secret_ref, r.region, c.principal_arn,
           c.recipient_account_id
    FROM replication_calls AS c, unnest(c.regions) AS r(region)
),

region_activity AS (  -- anything recorded in a replica region (the org working there), by bucket: the hourly rollups
    -- hold every committed event (exact first_seen per hour), and a whole-hour $window bucket holds whole hours
    SELECT aws_region AS region, time_bucket($window, hour) AS bucket, min(first_seen) AS first_event
    FROM hourly
    WHERE aws_region IN (SELECT region FROM replica_calls)
      AND hour >= $baseline_start - $window  -- the earliest judged bucket's lookback, whole hours
      AND hour < $until
    GROUP BY ALL
),

window_call_places AS (  -- the calls of the window the raw read below needs, where the rollups saw them: reads in a
    -- region some replication wrote to, and removals
    SELECT DISTINCT event_name, aws_region, 'read' AS action
    FROM hourly
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($read_events, event_name)
      AND error_code IS NULL
      AND aws_region IN (SELECT region FROM replica_calls)
      AND hour > $since - $window
      AND hour < $until
      AND last_seen >= $since
    UNION ALL
    SELECT DISTINCT event_name, aws_region, 'removed' AS action
    FROM hourly
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND list_contains($unreplicate_events, event_name)
      AND error_code IS NULL
      AND hour > $since - $window
      AND hour < $until
      AND last_seen >= $since
),

window_calls AS (  -- one raw read for both (the steps below split it by `action`, which the scan cannot filter on)
    SELECT
        p.action, event_time, event_name, aws_region, secret_id, secret_ids, principal_arn, session_issuer_arn,
        invoked_by, principal_account_id, recipient_account_id, request_parameters
    FROM events
    JOIN window_call_places AS p USING (event_name, aws_region)
    WHERE event_source = 'secretsmanager.amazonaws.com'
      AND error_code IS NULL
      AND event_time >= $since
      AND event_time < $until
),

replica_region_reads AS (  -- reads of any secret in a region some replication wrote to (filtered, not unnested)
    SELECT event_time, secret_ids, aws_region, principal_arn, session_issuer_arn, invoked_by, principal_account_id,
           recipient_account_id
    FROM window_calls
    WHERE action = 'read'
),

unreplications AS (  -- RemoveRegionsFromReplication names the regions; StopReplicationToReplica runs in the replica's
    SELECT event_time, secret_id, principal_arn, session_issuer_arn, invoked_by, principal_account_id,
           recipient_account_id,
           CASE WHEN json_type(request_parameters, '$.removeReplicaRegions') = 'ARRAY'
               THEN json_extract_string(request_parameters, '$.removeReplicaRegions[*]')
               ELSE [aws_region] END AS regions
    FROM window_calls
    WHERE action = 'removed'
),

activity AS (  -- what the judged buckets hold: the replications, reads in replica regions, removals
    SELECT event_time, 'replicated' AS action, secret, secret_ref, region, principal_arn, recipient_account_id
    FROM replica_calls
    WHERE event_time >= $since
    UNION ALL
    SELECT
        r.event_time,
        'read' AS action,
        secret_name(s.ref) AS secret,
        NULL AS secret_ref,
        r.aws_region AS region,
        actor(r.principal_arn, r.session_issuer_arn, r.invoked_by, r.principal_account_id) AS principal_arn,
        r.recipient_account_id
    FROM replica_region_reads AS r, unnest(r.secret_ids) AS s(ref)
    UNION ALL
    SELECT
        u.event_time,
        'removed' AS action,
        secret_name(u.secret_id) AS secret,
        u.secret_id AS secret_ref,
        g.region,
        actor(u.principal_arn, u.session_issuer_arn, u.invoked_by, u.principal_account_id) AS principal_arn,
        u.recipient_account_id
    FROM unreplications AS u, unnest(u.regions) AS g(region)
),

judged AS (
    SELECT *, time_bucket($window, event_time) AS bucket FROM activity
),

suspicious_replicas AS (  -- per judged bucket: replicas created into a region silent since b - lookback
    SELECT DISTINCT j.secret, j.region, j.bucket, r.secret_ref
    FROM (SELECT DISTINCT secret, region, bucket FROM judged) AS j
    JOIN replica_calls AS r
        ON r.secret = j.secret
        AND r.region = j.region
        AND r.event_time >= j.bucket - $lookback
        AND r.event_time < j.bucket + $window
    WHERE $history_start <= j.bucket - $lookback
      AND NOT EXISTS (
          SELECT 1 FROM region_activity AS a
          WHERE a.region = r.region
            AND a.bucket >= j.bucket - $lookback
            AND a.first_event < r.event_time
      )
),

findings AS (
    SELECT
        j.*,
        s.secret_ref AS replica_of,
        s.secret IS NOT NULL AS suspicious
    FROM judged AS j
    LEFT JOIN (SELECT secret, region, bucket, any_value(secret_ref) AS secret_ref FROM suspicious_replicas GROUP BY ALL) AS s
        USING (secret, region, bucket)
    WHERE j.action = 'removed' OR s.secret IS NOT NULL
)

SELECT
    coalesce(
        any_value(principal_arn) FILTER (WHERE action = 'replicated'),
        CASE WHEN count(DISTINCT principal_arn) = 1 THEN any_value(principal_arn) END,
        any_value(recipient_account_id)
    ) AS principal_arn,
    coalesce(any_value(replica_of), any_value(secret_ref)) AS resource_arn,
    secret,
    any_value(recipient_account_id) AS account_id,
    region,
    CASE
        WHEN count(*) FILTER (WHERE action = 'read') > 0 THEN 'critical'
        WHEN count(*) FILTER (WHERE action = 'replicated') > 0 THEN 'high'
        ELSE 'low'
    END AS severity,
    list_sort(list(DISTINCT action)) AS actions,
    count(*) FILTER (WHERE action = 'read') AS reads_in_region,
    list_sort(list(DISTINCT principal_arn) FILTER (WHERE action = 'read'))[:$max_listed] AS readers,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) AS event_count
FROM findings
GROUP BY secret, region, bucket
ORDER BY first_seen
