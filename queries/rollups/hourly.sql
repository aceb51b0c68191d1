-- The hourly rollup of committed events (pipeline/lake/rollups.py): one row per hour and group, the grain
-- detection baselines need. Bounded samples keep the smallest distinct values (sorted): the smallest N of a
-- union are the smallest N of the parts' smallest N, so files of different batches merge exactly (merge.sql).
WITH events AS (
    SELECT
        {
            'hour': date_trunc('hour', event_time),
            'event_date': event_date,
            'recipient_account_id': recipient_account_id,
            'aws_region': aws_region,
            'caller_arn': caller_arn(principal_arn, session_issuer_arn),
            'caller_account_id': principal_account_id,
            'principal_type': principal_type,
            'invoked_by': invoked_by,
            'kms_key': coalesce(key_arn, key_id),
            'secret_id': secret,
            'context_keys': list_sort(map_keys(encryption_context)),
            'event_source': event_source,
            'event_name': event_name,
            'error_code': error_code
        } AS grp,
        event_time,
        source_ip,
        encryption_context
    -- one row per secret the call names (BatchGetSecretValue names many): a secret's reads count every batch
    FROM committed_events, unnest(coalesce(nullif(secret_ids, []), [secret_id])) AS named(secret)
),

groups AS (
    SELECT
        grp,
        count(*) AS events,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        list_sort(list_distinct(list(source_ip))) AS source_ips
    FROM events
    GROUP BY grp
),

context_values AS (
    SELECT
        grp,
        pair.key AS context_key,
        list_sort(list_distinct(list(pair.value))) AS context_values
    FROM (SELECT grp, unnest(map_entries(encryption_context)) AS pair FROM events WHERE encryption_context IS NOT NULL)
    GROUP BY grp, context_key
),

contexts AS (
    SELECT
        grp,
        list(
            {
                'key': context_key,
                'values': list_slice(context_values, 1, $max_values),
                'overflow': len(context_values) > $max_values
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
    len(groups.source_ips) > $max_ips AS source_ips_overflow,
    coalesce(list_slice(contexts.contexts, 1, $max_keys), []) AS contexts,
    coalesce(len(contexts.contexts) > $max_keys, false) AS contexts_overflow
FROM groups
LEFT JOIN contexts ON groups.grp IS NOT DISTINCT FROM contexts.grp
ORDER BY ALL
