"""The other two thirds of a real trail: EC2, S3, STS, IAM, SSM, Lambda, CloudWatch Logs ... calls.

Ingest drops them (only KMS and Secrets Manager are kept), but they make up most of the bytes it has to read,
so their volume and shapes matter for throughput. Humans browse the console; workloads make SDK calls;
AWS services assume roles.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Callable
from itertools import accumulate

from pipeline.simulate import shapes
from pipeline.simulate.calls import Chunk, api_call, service_call
from pipeline.simulate.identities import Principal, World, pick
from pipeline.simulate.schedule import BUSINESS, OFFICE, Plan, diurnal

ACCOUNT_SHARE = {"prod": 0.5, "analytics": 0.2, "shared-services": 0.18, "dev": 0.12}
PRIMARY_REGION_SHARE = 0.75

_Call = Callable[[Chunk, int, Principal], None]


def _ec2(name: str, params: str) -> _Call:
    def call(c: Chunk, second: int, p: Principal) -> None:
        if c.rng.random() < 0.02:  # console users hit a permission gap now and then
            api_call(
                c,
                second,
                p,
                "ec2.amazonaws.com",
                name,
                params,
                read_only=True,
                version="1.08",
                error="Client.UnauthorizedOperation",
                message="You are not authorized to perform this operation.",
            )
            return
        api_call(c, second, p, "ec2.amazonaws.com", name, params, read_only=True, version="1.08")

    return call


def _simple(source: str, name: str, params: str, read_only: bool = True, version: str = "1.08") -> _Call:
    def call(c: Chunk, second: int, p: Principal) -> None:
        api_call(c, second, p, source, name, params, read_only=read_only, version=version)

    return call


def _global(source: str, name: str, params: str) -> _Call:
    """IAM and other global services are recorded in us-east-1 whatever region the console shows."""

    def call(c: Chunk, second: int, p: Principal) -> None:
        api_call(c, second, p, source, name, params, read_only=True, region="us-east-1", version="1.08")

    return call


def _bucket_call(name: str, error: str | None = None, message: str | None = None) -> _Call:
    def call(c: Chunk, second: int, p: Principal) -> None:
        bucket = f"{('logs', 'assets', 'backups', 'exports')[c.rng.randrange(4)]}-{c.account}"
        params = f'{{"bucketName":"{bucket}","Host":"{bucket}.s3.{c.region}.amazonaws.com","policy":""}}'
        failed = error is not None and c.rng.random() < 0.5
        api_call(
            c,
            second,
            p,
            "s3.amazonaws.com",
            name,
            params,
            read_only=True,
            version="1.08",
            error=error if failed else None,
            message=message if failed else None,
            resources=f'[{{"accountId":"{c.account}","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::{bucket}"}}]',
            request_id=c.s3_request_id(),
        )

    return call


def _ssm_heartbeat(c: Chunk, second: int, p: Principal) -> None:
    instance = "i-0" + pick("0123456789abcdef", 16, c.account, c.rng.randrange(12))
    params = (
        f'{{"instanceId":"{instance}","agentVersion":"3.3.380.0","agentStatus":"Active","platformType":"Linux",'
        '"platformName":"Amazon Linux","platformVersion":"2023","iPAddress":"10.20.3.14",'
        '"computerName":"ip-10-20-3-14.ec2.internal","agentName":"amazon-ssm-agent","availabilityZone":'
        f'"{c.region}a","availabilityZoneId":"use1-az4","ec2InstanceId":"{instance}"}}'
    )
    api_call(c, second, p, "ssm.amazonaws.com", "UpdateInstanceInformation", params, read_only=False)


def _log_stream(c: Chunk, second: int, p: Principal) -> None:
    stream = f"{c.day:%Y/%m/%d}/[$LATEST]{c.rng.getrandbits(128):032x}"
    params = f'{{"logGroupName":"/aws/lambda/{p.name}","logStreamName":"{stream}"}}'
    api_call(c, second, p, "logs.amazonaws.com", "CreateLogStream", params, read_only=False, version="1.08")


def _assume_role(c: Chunk, second: int, p: Principal) -> None:
    """A service (Lambda, ECS) assuming a workload's role: AWSService identity, credentials minus secrets."""
    if p.kind != "role":
        api_call(c, second, p, "sts.amazonaws.com", "GetCallerIdentity", "null", read_only=True)
        return
    service = (
        "lambda.amazonaws.com" if "lambda" in p.name or p.user_agent.startswith("Boto3") else "ecs-tasks.amazonaws.com"
    )
    role_arn = p.role_arn or p.arn
    params = f'{{"roleArn":"{role_arn}","roleSessionName":"{p.session}"}}'
    expiry = shapes.aws_date_text(c.moment(min(second + 3600, 86399)))
    response = (
        f'{{"credentials":{{"accessKeyId":"{p.access_key(c.day_index * 24 + second // 3600)}",'
        f'"expiration":"{expiry}"}},"assumedRoleUser":{{"assumedRoleId":"{p.unique_id}:{p.session}",'
        f'"arn":"{p.arn}"}}}}'
    )
    resources = f'[{{"accountId":"{c.account}","type":"AWS::IAM::Role","ARN":"{role_arn}"}}]'
    service_call(
        c,
        second,
        service,
        "sts.amazonaws.com",
        "AssumeRole",
        params,
        response=response,
        resources=resources,
        shared=c.uid(),
    )


HUMAN_CALLS: tuple[tuple[_Call, float], ...] = (
    (_ec2("DescribeInstances", '{"instancesSet":{},"filterSet":{}}'), 8),
    (_ec2("DescribeSecurityGroups", '{"securityGroupSet":{},"securityGroupIdSet":{},"filterSet":{}}'), 4),
    (_ec2("DescribeVolumes", '{"volumeSet":{},"filterSet":{}}'), 3),
    (_simple("s3.amazonaws.com", "ListBuckets", '{"Host":"s3.amazonaws.com"}'), 4),
    (_bucket_call("GetBucketPolicy", "NoSuchBucketPolicy", "The bucket policy does not exist"), 2),
    (_bucket_call("GetBucketAcl"), 2),
    (_global("iam.amazonaws.com", "ListRoles", '{"maxItems":1000}'), 2),
    (_global("iam.amazonaws.com", "ListAttachedRolePolicies", '{"roleName":"orders-api-task"}'), 1),
    (_simple("lambda.amazonaws.com", "ListFunctions20150331", '{"functionVersion":"ALL"}'), 2),
    (
        _simple(
            "cloudtrail.amazonaws.com",
            "LookupEvents",
            '{"maxResults":50,"lookupAttributes":[{"attributeKey":"ReadOnly","attributeValue":"false"}]}',
        ),
        1,
    ),
    (_simple("logs.amazonaws.com", "DescribeLogGroups", '{"limit":50}'), 2),
    (_simple("monitoring.amazonaws.com", "DescribeAlarms", '{"maxRecords":100}'), 2),
    (_simple("sts.amazonaws.com", "GetCallerIdentity", "null"), 1),
)
APP_CALLS: tuple[tuple[_Call, float], ...] = (
    (_ssm_heartbeat, 10),
    (
        _simple(
            "ssm.amazonaws.com",
            "GetParameter",
            '{"name":"/prod/app/feature-flags","withDecryption":false}',
            version="1.09",
        ),
        5,
    ),
    (_log_stream, 6),
    (_simple("sts.amazonaws.com", "GetCallerIdentity", "null"), 2),
    (_simple("ecr.amazonaws.com", "GetAuthorizationToken", "{}"), 2),
    (_simple("dynamodb.amazonaws.com", "DescribeTable", '{"tableName":"orders"}'), 3),
    (_simple("ec2.amazonaws.com", "DescribeNetworkInterfaces", '{"networkInterfaceIdSet":{},"filterSet":{}}'), 2),
    (_assume_role, 6),
)


def _picker(calls: tuple[tuple[_Call, float], ...]) -> Callable[[float], _Call]:
    cumulative = list(accumulate(weight for _, weight in calls))
    total = cumulative[-1]
    functions = [call for call, _ in calls]
    return lambda u: functions[bisect(cumulative, u * total)]


_PICK_HUMAN = _picker(HUMAN_CALLS)
_PICK_APP = _picker(APP_CALLS)


def per_day(world: World, plan: Plan, account: str, region: str) -> float:
    """This account's and region's share of the non-KMS events."""
    if plan.kms_only:
        return 0.0
    total = plan.events_per_day - plan.kms_target
    shares = {world.account(name): share for name, share in ACCOUNT_SHARE.items() if world.account(name)}
    recorded = sum(shares[a] for a in world.recorded)
    region_weights = [
        PRIMARY_REGION_SHARE if i == 0 else (1 - PRIMARY_REGION_SHARE) / (len(world.regions) - 1)
        for i in range(len(world.regions))
    ]
    return total * shares[account] / recorded * region_weights[world.regions.index(region)]


def generate(c: Chunk, plan: Plan) -> None:
    """Other-service records for one chunk: 35% humans on office hours, 65% workloads on business hours."""
    volume = per_day(c.world, plan, c.account, c.region)
    if volume <= 0:
        return
    # Service-owned sessions (aws:ec2-infrastructure) make no calls of their own.
    mine = [p for p in c.world.principals.values() if p.account == c.account and not p.name.startswith("aws:")]
    humans = [p for p in mine if p.kind == "sso"]
    apps = [p for p in mine if p.kind != "sso"]
    for group, share, profile, pick_call in ((humans, 0.35, OFFICE, _PICK_HUMAN), (apps, 0.65, BUSINESS, _PICK_APP)):
        if not group:
            continue
        for second in diurnal(c.rng, volume * share, profile):
            pick_call(c.rng.random())(c, second, c.pick(group))
