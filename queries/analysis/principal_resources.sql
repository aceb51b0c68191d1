-- The keys and secrets one principal touched (every secret of a batch read), with the operations, calls,
-- denials and first/last seen on each: the blast radius of a suspect principal.
WITH touched AS (
    SELECT
        *,
        CASE WHEN event_source = 'kms.amazonaws.com' THEN 'key' ELSE 'secret' END AS kind,
        unnest(coalesce(secret_ids, [coalesce(key_arn, key_id, secret_id)])) AS resource
    FROM events
    WHERE event_time >= $since
      AND event_time < $until
      AND $principal IN (principal_arn, session_issuer_arn, session_issuer_name, principal_name, invoked_by)
)

SELECT
    kind,
    resource,
    list_sort(list_distinct(list(event_name))) AS operations,
    count(*) AS calls,
    count(*) FILTER (list_contains($error_codes, error_code)) AS denied,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM touched
WHERE resource IS NOT NULL
GROUP BY ALL
ORDER BY calls DESC, resource
