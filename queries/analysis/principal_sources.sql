-- Where one principal called from: each source IP and user agent with its calls and first/last seen. A new
-- address or tool for a known workload is how stolen credentials show.
SELECT
    source_ip,
    user_agent,
    count(*) AS calls,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM events
WHERE event_time >= $since
  AND audited_service(event_source)
  AND event_time < $until
  AND $principal IN (principal_arn, session_issuer_arn, session_issuer_name, principal_name, invoked_by)
GROUP BY ALL
ORDER BY calls DESC, source_ip
