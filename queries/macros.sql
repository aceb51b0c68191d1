-- SQL helpers every DuckDB session of keytrail defines (the engine's sessions and the lake's rollup sessions):
-- a query is one SELECT, so logic several queries share lives here. Statements are separated by ';'.

-- 'arn:...:secret:prod/db-AbCdEf' and 'prod/db' are the same secret (a secret ARN ends in a 6-char suffix)
CREATE MACRO secret_name(ref) AS CASE WHEN contains(ref, ':secret:')
    THEN regexp_replace(split_part(ref, ':secret:', 2), '-[A-Za-z0-9]{6}$', '') ELSE ref END;

-- The caller, the one definition every query uses (Python twin: pipeline/callers.py): a workload role by its
-- role ARN (session names change every run); a person signed in through IAM Identity Center by the session
-- ARN (many people share one permission-set role; the session is the person)
CREATE MACRO caller_arn(principal_arn, session_issuer_arn) AS CASE
    WHEN session_issuer_arn LIKE '%:role/aws-reserved/sso.amazonaws.com/%' THEN principal_arn
    ELSE coalesce(session_issuer_arn, principal_arn) END;

-- Who acted, for summaries that must name every event: the caller, else the AWS service acting for it, else
-- the account (AWSAccount / AWSService identities carry no ARN)
CREATE MACRO actor(principal_arn, session_issuer_arn, invoked_by, principal_account_id) AS
    coalesce(caller_arn(principal_arn, session_issuer_arn), invoked_by, principal_account_id);

-- The services keytrail audits. The lake also keeps CloudTrail's own management events (StopLogging,
-- PutEventSelectors, ...) for the trail-blinding detections; activity summaries count these two only.
CREATE MACRO audited_service(event_source) AS event_source IN ('kms.amazonaws.com', 'secretsmanager.amazonaws.com');
