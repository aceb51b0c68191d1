-- Merge hourly rollup rows (hourly.sql's output, one file per committed batch and day) into one row per hour and
-- group: counts add up, first/last seen take the extremes, and the bounded samples keep the smallest distinct
-- values of the union, exact because every part kept its own smallest ones (see hourly.sql).
WITH rollups AS (
    SELECT
        {
            'hour': hour,
            'event_date': event_date,
            'recipient_account_id': recipient_account_id,
            'aws_region': aws_region,
            'caller_arn': caller_arn,
            'caller_account_id': caller_account_id,
            'principal_type': principal_type,
            'invoked_by': invoked_by,
            'kms_key': kms_key,
            'secret_id': secret_id,
            'context_keys': context_keys,
            'event_source': event_source,
            'event_name': event_name,
            'error_code': error_code
        } AS grp,
        events,
        first_seen,
        last_seen,
        source_ips,
        source_ips_overflow,
        contexts,
        contexts_overflow
    FROM rollup_rows
),

groups AS (
    SELECT
        grp,
        sum(events)::BIGINT AS events,
        min(first_seen) AS first_seen,
        max(last_seen) AS last_seen,
        list_sort(list_distinct(flatten(list(source_ips)))) AS source_ips,
        bool_or(source_ips_overflow) AS source_ips_overflow,
        bool_or(contexts_overflow) AS contexts_overflow
    FROM rollups
    GROUP BY grp
),

context_values AS (
    SELECT
        grp,
        context.key AS context_key,
        list_sort(list_distinct(flatten(list(context.values)))) AS context_values,
        bool_or(context.overflow) AS overflow
    FROM (SELECT grp, unnest(contexts) AS context FROM rollups)
    GROUP BY grp, context_key
),

contexts AS (
    SELECT
        grp,
        list(
            {
                'key': context_key,
                'values': list_slice(context_values, 1, $max_values),
                'overflow': overflow OR len(context_values) > $max_values
            }
            ORDER BY context_key
        ) AS contexts
    FROM context_values
    GROUP BY grp
)

SELECT
    unnest(groups.grp),
    groups.events,
    groups.first_seen,
    groups.last_seen,
    list_slice(groups.source_ips, 1, $max_ips) AS source_ips,
    groups.source_ips_overflow OR len(groups.source_ips) > $max_ips AS source_ips_overflow,
    coalesce(list_slice(contexts.contexts, 1, $max_keys), []) AS contexts,
    groups.contexts_overflow OR coalesce(len(contexts.contexts) > $max_keys, false) AS contexts_overflow
FROM groups
LEFT JOIN contexts ON groups.grp IS NOT DISTINCT FROM contexts.grp
ORDER BY ALL
