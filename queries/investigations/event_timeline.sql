-- Everything that happened within +/- $around of one event, across all principals: what led up to a
-- suspicious call and what followed it (the same caller, the same IP, or someone else on the same key).
WITH anchor AS (
    SELECT
        event_time AS anchor_time,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS anchor_principal,
        source_ip AS anchor_ip
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND event_id = $event_id
    LIMIT 1
),

nearby AS (
    SELECT e.*, a.*, actor(e.principal_arn, e.session_issuer_arn, e.invoked_by, e.principal_account_id) AS principal
    FROM events AS e, anchor AS a
    WHERE e.event_time BETWEEN a.anchor_time - $around AND a.anchor_time + $around
)

SELECT
    event_time,
    round(epoch(event_time) - epoch(anchor_time), 3) AS offset_seconds,
    event_id = $event_id AS is_anchor,
    principal,
    coalesce(principal = anchor_principal, false) AS same_principal,
    coalesce(source_ip = anchor_ip, false) AS same_source_ip,
    event_source,
    event_name,
    coalesce(key_arn, key_id, secret_id) AS resource,
    coalesce(error_code, 'ok') AS outcome,
    source_ip,
    event_id
FROM nearby
ORDER BY event_time, event_id
LIMIT $limit
