-- A recent event since $since, a failed one first (the kind worth a timeline): the value
-- `keytrail query show ID --lake` puts in an event_id param.
SELECT event_id
FROM events
WHERE event_time >= $since
ORDER BY error_code IS NULL, event_time DESC, event_id
LIMIT 1
