-- How much of the period's trail is proven intact (the HTML report's coverage line): the log files
-- `keytrail verify` found valid, out of every log file it knows of for the period (in the bucket or listed by a
-- digest), and how many failed. All zero when no verification covered the period.
SELECT
    count(*) FILTER (status = 'valid') AS verified,
    count(*) AS log_files,
    count(*) FILTER (status <> 'valid') AS failed
FROM integrity
WHERE kind = 'log'
  AND period_start >= $since
  AND period_start < $until
