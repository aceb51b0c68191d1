-- The busiest caller address since $since (an IP, not an AWS service name, of a caller with an ARN): the
-- value `keytrail query show ID --lake` puts in a source_ip param.
SELECT source_ip
FROM events
WHERE event_time >= $since
  AND principal_arn IS NOT NULL
  AND regexp_matches(source_ip, '^[0-9.:a-f]+$')
GROUP BY 1
ORDER BY count(*) DESC, 1
LIMIT 1
