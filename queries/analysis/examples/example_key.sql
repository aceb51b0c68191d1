-- The busiest KMS key since $since: the value `keytrail query show ID --lake` puts in a key or resource param.
SELECT key_arn AS key
FROM events
WHERE event_time >= $since
  AND key_arn IS NOT NULL
GROUP BY 1
ORDER BY count(*) DESC, 1
LIMIT 1
