-- When the newest event of the session happened: `keytrail query show --lake` picks its example values in
-- the day before it, so they come from the lake's latest activity.
SELECT max(event_time) AS latest
FROM events
