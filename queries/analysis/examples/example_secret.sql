-- The most read secret since $since: the value `keytrail query show ID --lake` puts in a secret param.
SELECT secret_id AS secret
FROM events
WHERE event_time >= $since
  AND event_name = 'GetSecretValue'
  AND secret_id IS NOT NULL
GROUP BY 1
ORDER BY count(*) DESC, 1
LIMIT 1
