-- The busiest caller since $since: the value `keytrail query show ID --lake` puts in a principal param, so
-- the printed example returns rows on that lake.
SELECT caller_arn(principal_arn, session_issuer_arn) AS principal
FROM events
WHERE event_time >= $since
  AND caller_arn(principal_arn, session_issuer_arn) IS NOT NULL
GROUP BY 1
ORDER BY count(*) DESC, 1
LIMIT 1
