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

-- What kind of principal made a call, from the event alone ('human' | 'workload' | 'service'), so thresholds
-- can tell a person doing hundreds of decrypts (rare) from a service role doing thousands (normal). First rule
-- that matches wins:
--   service   userIdentity type AWSService; no identity type at all (service events, a scheduled key deletion);
--             any call AWS made for the caller (invokedBy set: '<svc>.amazonaws.com' for Secrets Manager
--             decrypting for GetSecretValue, EBS, S3 SSE-KMS, forward-access sessions; 'AWS Internal', which
--             real trails show on hundreds of an IAM user's Decrypts from sourceIPAddress 'AWS Internal'); a
--             service-linked role (:role/aws-service-role/...); a role AWS itself assumes (names starting 'aws:',
--             e.g. aws:ec2-infrastructure decrypting EBS volumes)
--   human     IAM users, root, federated / SAML / Identity Center users; an Identity Center session
--             (AWSReservedSSO_ permission-set roles); a console session (a browser's or the console's user
--             agent); an assumed-role session named by an e-mail address (SAML federation names the session after the person)
--   workload  everything else: assumed roles of EC2 / ECS / Lambda / CI, web-identity (IRSA) sessions, and
--             another account's caller seen only as AWSAccount (the key owner's trail cannot see who it is)
CREATE MACRO principal_kind(principal_type, principal_arn, session_issuer_arn, invoked_by, user_agent) AS CASE
    WHEN principal_type = 'AWSService' OR principal_type IS NULL
        OR invoked_by IS NOT NULL
        OR session_issuer_arn LIKE '%:role/aws-service-role/%'
        OR principal_arn LIKE '%:assumed-role/aws:%' THEN 'service'
    WHEN principal_type IN ('IAMUser', 'Root', 'FederatedUser', 'SAMLUser', 'IdentityCenterUser')
        OR session_issuer_arn LIKE '%:role/aws-reserved/sso.amazonaws.com/%'
        OR principal_arn LIKE '%:assumed-role/AWSReservedSSO\_%' ESCAPE '\'
        OR user_agent LIKE 'Mozilla/%' OR user_agent LIKE '%console.amazonaws.com%'
        OR user_agent LIKE '%signin.amazonaws.com%'
        OR (principal_type = 'AssumedRole' AND regexp_matches(principal_arn, '/[^/@]+@[^/@]+\.[^/@]+$')) THEN 'human'
    ELSE 'workload' END;

-- The services keytrail audits. The lake also keeps CloudTrail's own management events (StopLogging,
-- PutEventSelectors, ...) for the trail-blinding detections; activity summaries count these two only.
CREATE MACRO audited_service(event_source) AS event_source IN ('kms.amazonaws.com', 'secretsmanager.amazonaws.com');

-- The caller a detection names: its caller_arn, else - for a caller from another account that the key owner's
-- trail shows only as userIdentity type AWSAccount - that account's id (never null for a real caller).
CREATE MACRO named_caller(caller, principal_type, account_id) AS
    coalesce(caller, CASE WHEN principal_type = 'AWSAccount' THEN account_id END);
