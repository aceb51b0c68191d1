"""The simulated organization: accounts, KMS keys, secrets and the principals that use them.

Everything is derived from the seed by hashing labels, so a worker process can rebuild the same world from
the seed alone. Identifiers follow the real formats (12-digit accounts, `AROA`/`AIDA` principal ids,
`ASIA`/`AKIA` access key ids, key UUIDs, 6-character secret suffixes) and never carry secret material.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

ACCOUNT_NAMES: tuple[str, ...] = ("prod", "analytics", "shared-services", "dev")
DEFAULT_REGIONS: tuple[str, ...] = ("us-east-1", "eu-west-1")
EXTERNAL_ACCOUNT_LABEL = "external"  # the attacker's account, outside the organization
PARTNER_ACCOUNT_LABEL = "partner"  # a long-standing partner outside the organization (not in trusted accounts)


def digest(*labels: object) -> bytes:
    """A stable 32-byte digest of labels (the only source of identifiers; no process-salted hash())."""
    return hashlib.blake2b(":".join(map(str, labels)).encode(), digest_size=32).digest()


@functools.lru_cache(maxsize=1 << 16)
def pick(alphabet: str, n: int, *labels: object) -> str:
    """`n` characters of `alphabet` chosen deterministically from labels."""
    raw = digest(*labels)
    while len(raw) < n:
        raw += digest(raw)
    return "".join(alphabet[b % len(alphabet)] for b in raw[:n])


def stable_uuid(*labels: object) -> str:
    h = digest(*labels).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"


def account_id(seed: int, label: str) -> str:
    """A 12-digit account id (no leading zero)."""
    return str(10**11 + int.from_bytes(digest(seed, "account", label)[:8], "big") % (9 * 10**11))


@dataclass(frozen=True)
class Key:
    alias: str
    key_id: str
    account: str
    region: str

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account}:key/{self.key_id}"


@dataclass(frozen=True)
class Secret:
    name: str
    account: str
    region: str
    suffix: str

    @property
    def arn(self) -> str:
        return f"arn:aws:secretsmanager:{self.region}:{self.account}:secret:{self.name}-{self.suffix}"


@dataclass(frozen=True)
class Principal:
    """Who makes calls. `kind`: role (workload session), sso (human via IAM Identity Center), user (IAM user),
    slr (an AWS service's service-linked role; `user_agent` is the service, e.g. config.amazonaws.com)."""

    label: str
    kind: str
    account: str
    name: str  # role name (role/sso) or user name (user)
    session: str  # session name (role/sso); empty for users
    user_agent: str
    source_ip: str
    vpc_endpoint: str | None = None
    seed: int = 0

    @property
    def arn(self) -> str:
        if self.kind == "user":
            return f"arn:aws:iam::{self.account}:user/{self.name}"
        return f"arn:aws:sts::{self.account}:assumed-role/{self.name}/{self.session}"

    @property
    def role_arn(self) -> str | None:
        if self.kind == "user":
            return None
        paths = {"sso": "aws-reserved/sso.amazonaws.com/", "slr": f"aws-service-role/{self.user_agent}/"}
        path = paths.get(self.kind, "")
        return f"arn:aws:iam::{self.account}:role/{path}{self.name}"

    @property
    def unique_id(self) -> str:
        prefix = "AIDA" if self.kind == "user" else "AROA"
        return prefix + pick(_B32, 17, self.seed, "uid", self.account, self.name)

    def access_key(self, epoch: int) -> str:
        """Access key id as CloudTrail records it: long-term AKIA for users, a new ASIA per session epoch."""
        if self.kind == "user":
            return "AKIA" + pick(_B32, 16, self.seed, "akia", self.arn)
        return "ASIA" + pick(_B32, 16, self.seed, "asia", self.arn, epoch)

    def identity(self, epoch: int, created: str, invoked_by: str | None = None) -> str:
        """The `userIdentity` object as JSON text (built once per session epoch, reused for many events)."""
        via = f',"invokedBy":"{invoked_by}"' if invoked_by else ""
        if self.kind == "user":
            return (
                f'{{"type":"IAMUser","principalId":"{self.unique_id}","arn":"{self.arn}",'
                f'"accountId":"{self.account}","accessKeyId":"{self.access_key(epoch)}",'
                f'"userName":"{self.name}"{via}}}'
            )
        return (
            f'{{"type":"AssumedRole","principalId":"{self.unique_id}:{self.session}","arn":"{self.arn}",'
            f'"accountId":"{self.account}","accessKeyId":"{self.access_key(epoch)}","sessionContext":'
            f'{{"sessionIssuer":{{"type":"Role","principalId":"{self.unique_id}","arn":"{self.role_arn}",'
            f'"accountId":"{self.account}","userName":"{self.name}"}},"webIdFederationData":{{}},'
            f'"attributes":{{"creationDate":"{created}","mfaAuthenticated":"false"}}}}{via}}}'
        )


def service_identity(invoked_by: str) -> str:
    """An AWS service acting on its own (S3 bucket keys, sts for lambda, ...)."""
    return f'{{"type":"AWSService","invokedBy":"{invoked_by}"}}'


def service_event_identity(account: str, invoked_by: str) -> str:
    """Service events (AwsServiceEvent) carry no principal, only the account and the service."""
    return f'{{"accountId":"{account}","invokedBy":"{invoked_by}"}}'


# --- user agents (real formats, pinned versions) --------------------------------------------------------

UA_JAVA = (
    "aws-sdk-java/2.25.38 Linux/5.10.213-201.855.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/21.0.3+9-LTS "
    "Java/21.0.3 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/standard"
)
UA_LAMBDA = (
    "Boto3/1.34.84 md/Botocore#1.34.84 ua/2.0 os/linux#5.10.214-223.825.amzn2.x86_64 md/arch#x86_64 "
    "lang/python#3.11.8 md/pyimpl#CPython exec-env/AWS_Lambda_python3.11 cfg/retry-mode#legacy Botocore/1.34.84"
)
UA_GO = "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.2 md/GOOS#linux md/GOARCH#amd64 api/kms#1.31.0"
UA_CLI = (
    "aws-cli/2.15.38 md/awscrt#0.19.19 ua/2.0 os/macos#23.4.0 md/arch#arm64 lang/python#3.11.8 "
    "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/prompt#off"
)
UA_CONSOLE = "AWS Internal"
UA_TERRAFORM = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.45.0 "
    "(+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.1"
)
UA_CODEBUILD = (
    "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#5.10.213 md/arch#x86_64 lang/python#3.11.8 "
    "md/pyimpl#CPython exec-env/AWS_ECS_EC2 cfg/retry-mode#standard md/installer#docker md/prompt#off"
)


@dataclass(frozen=True)
class World:
    """The simulated organization. `recorded` = the accounts whose trail the simulation writes; an
    organization trail (`org_trail`) records them all under `AWSLogs/<org_id>/`, otherwise only the first."""

    seed: int
    org_id: str
    org_trail: bool
    account_ids: tuple[str, ...]
    recorded: tuple[str, ...]
    regions: tuple[str, ...]
    external_account: str
    keys: dict[tuple[str, str, str], Key] = field(default_factory=dict)  # (account, region, alias)
    secrets: dict[tuple[str, str, str], Secret] = field(default_factory=dict)  # (account, region, name)
    principals: dict[str, Principal] = field(default_factory=dict)  # label -> principal

    @property
    def home_region(self) -> str:
        return self.regions[0]

    def account(self, name: str) -> str | None:
        """An account id by its role name (prod, analytics, ...); None when the world has fewer accounts."""
        index = ACCOUNT_NAMES.index(name)
        return self.account_ids[index] if index < len(self.account_ids) else None

    def key(self, account: str, region: str, alias: str) -> Key:
        found = self.keys.get((account, region, alias))
        if found is None:
            found = Key(alias, stable_uuid(self.seed, "key", account, region, alias), account, region)
            self.keys[(account, region, alias)] = found
        return found

    def secret(self, account: str, region: str, name: str) -> Secret:
        found = self.secrets.get((account, region, name))
        if found is None:
            found = Secret(name, account, region, pick(_ALNUM, 6, self.seed, "secret", account, region, name))
            self.secrets[(account, region, name)] = found
        return found

    def principal(self, label: str) -> Principal:
        return self.principals[label]

    def has(self, *labels: str) -> bool:
        return all(label in self.principals for label in labels)


# Secrets of the prod account: the deploy pipeline reads the first DEPLOY_SECRETS on every deploy.
PROD_SECRETS: tuple[str, ...] = (
    "prod/orders/db-password",
    "prod/orders/api-signing-key",
    "prod/billing/db-password",
    "prod/billing/stripe-restricted-key",
    "prod/auth/jwt-signing-key",
    "prod/auth/oauth-client-secret",
    "prod/search/opensearch-master",
    "prod/notifications/sendgrid-api-key",
    "prod/notifications/twilio-auth-token",
    "prod/ledger/db-password",
    "prod/reporting/warehouse-password",
    "prod/import/partner-sftp-key",
    "prod/payments/stripe-api-key",
    "prod/payments/webhook-secret",
    "prod/db/orders-postgres",
    "prod/db/billing-postgres",
    "prod/db/ledger-postgres",
    "prod/partners/api-token",
    "prod/legacy/ftp-password",
    "prod/cache/redis-auth",
    "prod/queue/rabbitmq-admin",
    "prod/analytics/segment-write-key",
    "prod/cdn/origin-shared-secret",
    "prod/mail/smtp-relay",
    "prod/monitoring/datadog-api-key",
    "prod/monitoring/pagerduty-token",
    "prod/github/deploy-key",
    "prod/vault/unseal-share-1",
    "prod/vault/unseal-share-2",
    "prod/backup/encryption-passphrase",
    "prod/sso/saml-signing-cert",
    "prod/crm/salesforce-token",
    "prod/erp/sap-service-user",
    "prod/maps/google-api-key",
    "prod/ml/model-registry-token",
    "prod/kafka/sasl-password",
    "prod/elastic/cloud-api-key",
    "prod/slack/bot-token",
    "prod/zendesk/api-token",
    "prod/support/intercom-secret",
)
DEPLOY_SECRETS = 12
ROTATED_SECRETS: tuple[str, ...] = ("prod/db/orders-postgres", "prod/db/billing-postgres", "prod/db/ledger-postgres")

ORDERS_TENANTS: tuple[str, ...] = tuple(f"t-{1001 + i}" for i in range(8))
ONBOARDED_TENANTS: tuple[str, ...] = ("t-2041", "t-2042")
BILLING_TENANTS: tuple[str, ...] = ("t-1003", "t-1005", "t-1007")
LEDGER_IDS: tuple[str, ...] = tuple(f"L-{i:04d}" for i in range(1, 6))
DATASETS: tuple[str, ...] = ("sales", "inventory", "marketing", "finance")
EBS_VOLUMES: tuple[str, ...] = tuple(f"vol-0{i:x}4e7a9c2b1d{i:02x}f3" for i in range(6))


# Look-alike humans and incident humans use different permission sets, so they differ at the role level too.
def _sso(seed: int, label: str, account: str, permission_set: str, email: str, ip: str) -> Principal:
    # Look-alike humans and incident humans use different permission sets: they differ at the role level too.
    role = f"AWSReservedSSO_{permission_set}_{pick('0123456789abcdef', 16, seed, 'sso', account, permission_set)}"
    return Principal(label, "sso", account, role, email, UA_CONSOLE, ip, seed=seed)


def _role(
    seed: int, label: str, account: str, role: str, session: str, ua: str, ip: str, vpce: str | None = None
) -> Principal:
    return Principal(label, "role", account, role, session, ua, ip, vpce, seed=seed)


def _service_role(seed: int, label: str, account: str, role: str, session: str, service: str) -> Principal:
    """An AWS service's service-linked role (its calls come from the service: its name as IP and user agent)."""
    return Principal(label, "slr", account, role, session, service, service, seed=seed)


def partner_account(seed: int) -> str:
    """The long-standing partner's account (outside the organization, not configured as trusted)."""
    return account_id(seed, PARTNER_ACCOUNT_LABEL)


def build_world(
    seed: int, accounts: int | Sequence[str] = 4, regions: Sequence[str] = DEFAULT_REGIONS, org: bool = True
) -> World:
    """The organization for a seed: 1-4 accounts (prod, analytics, shared-services, dev), 1+ regions."""
    if isinstance(accounts, int):
        if not 1 <= accounts <= len(ACCOUNT_NAMES):
            raise ValueError(f"accounts must be 1..{len(ACCOUNT_NAMES)}, got {accounts}")
        ids = tuple(account_id(seed, name) for name in ACCOUNT_NAMES[:accounts])
    else:
        ids = tuple(accounts)
        if not ids or len(ids) > len(ACCOUNT_NAMES) or not all(a.isdigit() and len(a) == 12 for a in ids):
            raise ValueError("accounts must be 1-4 twelve-digit account ids")
    if not regions:
        raise ValueError("at least one region is needed")
    org_id = "o-" + pick("abcdefghijklmnopqrstuvwxyz0123456789", 10, seed, "org")
    world = World(
        seed, org_id, org, ids, ids if org else ids[:1], tuple(regions), account_id(seed, EXTERNAL_ACCOUNT_LABEL)
    )
    _add_principals(world)
    return world


def _add_principals(world: World) -> None:
    s = world.seed
    prod, analytics, shared, dev = (world.account(n) or "" for n in ACCOUNT_NAMES)
    vpce = "vpce-0" + pick("0123456789abcdef", 16, s, "vpce", prod)
    people = [
        # label, account, permission set, email, office ip
        ("alice", prod, "DevOpsAccess", "alice@example.com", "198.51.100.23"),
        ("bob", prod, "DeveloperAccess", "bob@example.com", "198.51.100.41"),
        ("carol", prod, "PlatformAdministrator", "carol@example.com", "198.51.100.7"),
        ("dave", prod, "ReadOnlyAccess", "dave@example.com", "198.51.100.88"),
        ("mallory", prod, "AdministratorAccess", "mallory@example.com", "198.51.100.131"),
        ("trent", prod, "AdministratorAccess", "trent@example.com", "198.51.100.77"),
        ("judy", prod, "PowerUserAccess", "judy@example.com", "198.51.100.152"),
        ("oscar", prod, "PowerUserAccess", "oscar@example.com", "198.51.100.19"),
        ("grace", analytics, "DeveloperAccess", "grace@example.com", "198.51.100.64"),
        ("heidi", shared, "AdministratorAccess", "heidi@example.com", "198.51.100.99"),
        ("ivan", dev, "DeveloperAccess", "ivan@example.com", "198.51.100.201"),
        # incident-only people (detections v2): their permission sets are no look-alike's
        ("peggy", prod, "SecurityAudit", "peggy@example.com", "198.51.100.173"),
        ("victor", prod, "DatabaseAdministrator", "victor@example.com", "198.51.100.209"),
    ]
    found: list[Principal] = [_sso(s, *person) for person in people]
    found += [
        _role(s, "orders-api", prod, "orders-api-task", "orders-api", UA_JAVA, "10.20.4.17", vpce),
        _role(s, "billing-worker", prod, "billing-worker-task", "billing-worker", UA_JAVA, "10.20.6.58", vpce),
        _role(s, "reporting-svc", prod, "reporting-svc-role", "reporting-svc", UA_LAMBDA, "3.92.114.20"),
        _role(s, "payments-lambda", prod, "payments-lambda-role", "payments-webhook", UA_LAMBDA, "54.84.91.7"),
        _role(s, "nightly-etl", prod, "nightly-etl-role", "nightly-etl", UA_GO, "10.20.9.140", vpce),
        _role(s, "ledger-service", prod, "ledger-service-task", "ledger-service", UA_GO, "10.20.5.33", vpce),
        _role(s, "import-worker", prod, "import-worker-role", "import-worker", UA_LAMBDA, "34.201.7.188"),
        _role(s, "legacy-batch", prod, "legacy-batch-role", "i-0a7c31f9e2b4d6081", UA_JAVA, "10.20.1.9"),
        _role(s, "data-lake-writer", prod, "data-lake-writer-role", "firehose-delivery", UA_JAVA, "10.20.8.21"),
        _role(s, "deploy-pipeline", prod, "deploy-pipeline-role", "codebuild-deploy", UA_CODEBUILD, "52.3.88.140"),
        _role(
            s,
            "rotation-lambda",
            prod,
            "SecretsManagerRotation-postgres",
            "SecretsManagerRotation-postgres",
            UA_LAMBDA,
            "44.198.20.5",
        ),
        _role(
            s,
            "mq-rotation-lambda",
            prod,
            "SecretsManagerRotation-rabbitmq",
            "SecretsManagerRotation-rabbitmq",
            UA_LAMBDA,
            "44.198.20.9",
        ),
        _role(
            s, "ebs-infra", prod, "aws:ec2-infrastructure", "i-0a7c31f9e2b4d6081", "AWS Internal", "ec2.amazonaws.com"
        ),
        _role(s, "gh-actions-runner", prod, "gh-actions-runner", "gha-runner-7f3a91", UA_CLI, "203.0.113.66"),
        _role(s, "dev-sandbox", dev, "dev-sandbox-role", "sandbox", UA_CLI, "198.51.100.201"),
        _role(s, "analytics-reader", analytics, "analytics-reader-role", "shared-data-sync", UA_LAMBDA, "18.204.71.3"),
        _role(s, "glue-etl", analytics, "glue-etl-role", "GlueJobRunnerSession", UA_JAVA, "10.40.3.12"),
        _role(
            s, "artifact-builder", shared, "artifact-builder-role", "codebuild-artifacts", UA_CODEBUILD, "52.3.88.151"
        ),
        _role(s, "dev-app", dev, "dev-app-role", "dev-app", UA_LAMBDA, "3.85.12.200"),
        _role(s, "partner-sync", world.external_account, "partner-sync", "sync-3f2a", UA_GO, "203.0.113.14"),
        Principal("svc-backup", "user", prod, "svc-backup", "", UA_CLI, "10.20.2.44", seed=s),
        # a person's IAM user on the CLI, from an address the company never uses (detections v2)
        Principal("erin", "user", prod, "erin.walsh", "", UA_CLI, "185.220.101.47", seed=s),
        # routine look-alikes of detections v2
        _role(s, "weekly-reconcile", prod, "weekly-reconcile-role", "weekly-reconcile", UA_GO, "10.20.9.77", vpce),
        _role(s, "search-indexer", prod, "search-indexer-task", "search-indexer", UA_JAVA, "10.20.7.12", vpce),
        _role(s, "terraform", prod, "terraform-apply", "terraform-run", UA_TERRAFORM, "52.3.88.160"),
        _service_role(s, "config", prod, "AWSServiceRoleForConfig", "AWSConfig-Describe", "config.amazonaws.com"),
        _service_role(
            s, "access-analyzer", prod, "AWSServiceRoleForAccessAnalyzer", "analyzer", "access-analyzer.amazonaws.com"
        ),
    ]
    for principal in found:
        if principal.account:  # principals of accounts this world does not have are left out
            world.principals[principal.label] = principal
