-- Failed calls per time bucket and error code: the errors chart of the overview notebook and the report.
SELECT
    time_bucket($bucket, event_time) AS hour,
    error_code,
    count(*) AS calls
FROM events
WHERE event_time >= $since
  AND audited_service(event_source)
  AND event_time < $until
  AND error_code IS NOT NULL
GROUP BY ALL
ORDER BY hour, error_code
