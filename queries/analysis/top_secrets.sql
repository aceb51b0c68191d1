-- The most read secrets of the window (every secret of a batch read counts), with their distinct readers and
-- failed reads: which secrets are hot and who reads them.
WITH reads AS (
    SELECT
        *,
        actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS reader,
        unnest(coalesce(secret_ids, [secret_id])) AS secret
    FROM events
    WHERE event_time >= $since
      AND audited_service(event_source)
      AND event_time < $until
      AND list_contains($read_events, event_name)
)

SELECT
    secret,
    count(*) AS reads,
    count(DISTINCT reader) AS readers,
    count(error_code) AS failed
FROM reads
GROUP BY ALL
ORDER BY reads DESC, secret
LIMIT $limit
