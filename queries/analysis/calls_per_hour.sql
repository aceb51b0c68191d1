-- Calls per time bucket and operation: the activity chart of the overview notebook and the report.
SELECT
    time_bucket($bucket, event_time) AS hour,
    event_name,
    count(*) AS calls
FROM events
WHERE event_time >= $since
  AND audited_service(event_source)
  AND event_time < $until
GROUP BY ALL
ORDER BY hour, event_name
