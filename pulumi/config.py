"""Typed stack settings: ``Pulumi.<stack>.yaml`` read once into one frozen object.

Every key is declared with its type, default and description in ``Pulumi.yaml``; the CLI fills
in the defaults, so each key is required here and a missing one is a bug, not an empty string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import pulumi

PROJECT = "micro-agent"
SANDBOXED_STACKS = frozenset({"dev", "staging"})
RUNTIMES = frozenset({"python3.12", "python3.13"})
ARCHITECTURES = frozenset({"arm64", "x86_64"})
# The retention values CloudWatch Logs accepts.
LOG_RETENTION_DAYS = frozenset(
    {
        1,
        3,
        5,
        7,
        14,
        30,
        60,
        90,
        120,
        150,
        180,
        365,
        400,
        545,
        731,
        1096,
        1827,
        2192,
        2557,
        2922,
        3288,
        3653,
    }
)
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")
# The cluster's DbClusterResourceId: IAM database authentication names it in rds-db:connect.
_CLUSTER_RESOURCE_ID = re.compile(r"^cluster-[A-Z0-9]+$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# The patterns below are used with fullmatch (``$`` would let a trailing newline through) and
# spell digits [0-9] (``\d`` also matches other scripts' digits).
# The Graph API version segment of the WhatsApp Cloud API path, e.g. v21.0.
_WHATSAPP_API_VERSION = re.compile(r"v[0-9]+\.[0-9]+")
_E164_PHONE = re.compile(r"\+[1-9][0-9]{7,14}")
# Written by hand rather than with email-validator: the program only needs to catch a typo in a
# stack file (the service normalises and validates every address it sends to), and the Pulumi
# program's environment stays pulumi + pulumi-aws.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_NAME = rf"{_LABEL}(?:\.{_LABEL})+"
_DOMAIN = re.compile(_DOMAIN_NAME)
# A local part without spaces, commas (the list separator) or wildcards, then a domain.
_EMAIL = re.compile(rf"[^@\s,*]+@{_DOMAIN_NAME}")
# Sends in flight at once within one invocation (threads of the live sender).
MIN_SEND_CONCURRENCY = 1
MAX_SEND_CONCURRENCY = 32
# Maintenance drops whole month partitions of the ledger: keep at least one month plus margin.
MIN_LEDGER_RETENTION_DAYS = 35


class StackConfigError(ValueError):
    """A stack setting is missing, malformed or unsafe; the message says which and why."""


@dataclass(frozen=True)
class DatabaseSettings:
    """Aurora: referenced (secret ARN, endpoint, cluster resource id) or created by the stack."""

    create: bool
    secret_arn: str
    endpoint: str
    cluster_resource_id: str
    name: str
    min_capacity: float
    max_capacity: float
    backup_retention_days: int


@dataclass(frozen=True)
class ScheduleSettings:
    """Optional EventBridge Scheduler invocations, one per tenant."""

    tenants: tuple[str, ...]
    expression: str
    batch_size: int


@dataclass(frozen=True)
class DispatchSettings:
    """What live dispatch needs: the WhatsApp API version, SES identities, unsubscribe links."""

    whatsapp_api_version: str
    ses_identities: tuple[str, ...]
    unsubscribe_url: str
    send_concurrency: int


@dataclass(frozen=True)
class StackSettings:
    """Everything the program needs from the stack's configuration."""

    project: str
    stack: str
    disparo_enabled: bool
    sandbox_recipients: tuple[str, ...]
    alert_emails: tuple[str, ...]
    log_retention_days: int
    deletion_protection: bool
    lambda_runtime: str
    lambda_architecture: str
    dry_run_timeout_s: int
    dry_run_memory_mb: int
    dry_run_reserved_concurrency: int
    async_max_retry_attempts: int
    async_max_event_age_s: int
    dry_run_artifact_key: str
    migrate_artifact_key: str
    vpc_subnet_ids: tuple[str, ...]
    vpc_security_group_ids: tuple[str, ...]
    database: DatabaseSettings
    schedule: ScheduleSettings
    dispatch: DispatchSettings
    metrics_namespace: str
    ledger_retention_days: int

    @property
    def prefix(self) -> str:
        """Physical-name prefix of the stack's resources, e.g. ``micro-agent-dev``."""
        return f"{self.project}-{self.stack}"

    def tags(self, service: str) -> dict[str, str]:
        """The tags every taggable resource carries."""
        return {"project": self.project, "stack": self.stack, "service": service}


def _strings(config: pulumi.Config, key: str) -> tuple[str, ...]:
    value: Any = config.require_object(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StackConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _capacity(config: pulumi.Config, key: str) -> float:
    raw = config.require(key)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal(-1)
    if value < Decimal("0.5") or value > 256 or value % Decimal("0.5") != 0:
        raise StackConfigError(f"{key}: expected ACUs from 0.5 to 256 in 0.5 steps, got {raw!r}")
    return float(value)


def _in_range(key: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise StackConfigError(f"{key}: expected an integer from {low} to {high}, got {value}")
    return value


def _is_email(value: str) -> bool:
    return bool(_EMAIL.fullmatch(value))


def validate_dispatch(dispatch: DispatchSettings) -> None:
    """The live-dispatch settings; raise StackConfigError with a one-line message."""
    if not _WHATSAPP_API_VERSION.fullmatch(dispatch.whatsapp_api_version):
        raise StackConfigError(
            "whatsappApiVersion: expected a Graph API version like v21.0, "
            f"got {dispatch.whatsapp_api_version!r}"
        )
    bad_identities = [
        identity
        for identity in dispatch.ses_identities
        if not (_DOMAIN.fullmatch(identity) or _is_email(identity))
    ]
    if bad_identities:
        raise StackConfigError(
            "sesIdentities: expected verified SES domains (example.com) or addresses "
            f"(sales@example.com), got {bad_identities}"
        )
    url = dispatch.unsubscribe_url
    if url:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in url):
            raise StackConfigError(
                "unsubscribeUrl: expected an https:// URL (the inbound function's URL) or empty "
                f"to skip email, got {url!r}"
            )


def validate_sandbox(settings: StackSettings) -> None:
    """Who live senders may reach outside prod; raise StackConfigError with a one-line message."""
    bad_recipients = [
        recipient
        for recipient in settings.sandbox_recipients
        if not (_E164_PHONE.fullmatch(recipient) or _is_email(recipient))
    ]
    if bad_recipients:
        raise StackConfigError(
            "sandboxRecipients: expected E.164 phones (+5511999990000) or email addresses, "
            f"got {bad_recipients}"
        )
    if (
        settings.disparo_enabled
        and settings.stack in SANDBOXED_STACKS
        and not settings.sandbox_recipients
    ):
        raise StackConfigError(
            f"disparoEnabled is true on stack {settings.stack!r} but sandboxRecipients is empty: "
            "live dispatch outside prod only reaches sandbox recipients; run "
            f"`pulumi config set --path 'sandboxRecipients[0]' +55... --stack {settings.stack}` "
            "or set disparoEnabled false"
        )


def validate(settings: StackSettings) -> StackSettings:
    """Cross-field rules; raise StackConfigError with a one-line message."""
    validate_sandbox(settings)
    if settings.lambda_runtime not in RUNTIMES:
        raise StackConfigError(
            f"lambdaRuntime: expected one of {sorted(RUNTIMES)}, got {settings.lambda_runtime!r}"
        )
    if settings.lambda_architecture not in ARCHITECTURES:
        raise StackConfigError(
            f"lambdaArchitecture: expected one of {sorted(ARCHITECTURES)}, "
            f"got {settings.lambda_architecture!r}"
        )
    if settings.log_retention_days not in LOG_RETENTION_DAYS:
        raise StackConfigError(
            f"logRetentionDays: expected a value CloudWatch accepts (e.g. 14, 30, 90, 365), "
            f"got {settings.log_retention_days}"
        )
    bad_subnets = [s for s in settings.vpc_subnet_ids if not _SUBNET.match(s)]
    if bad_subnets or len(settings.vpc_subnet_ids) < 2:
        raise StackConfigError(
            "vpcSubnetIds: expected at least two private subnet ids (subnet-…) in different AZs, "
            f"got {list(settings.vpc_subnet_ids)}"
        )
    if not settings.vpc_security_group_ids or not all(
        _SECURITY_GROUP.match(sg) for sg in settings.vpc_security_group_ids
    ):
        raise StackConfigError(
            "vpcSecurityGroupIds: expected at least one security group id (sg-…), "
            f"got {list(settings.vpc_security_group_ids)}"
        )
    database = settings.database
    if not database.create and not _SECRET_ARN.match(database.secret_arn):
        raise StackConfigError(
            "dbSecretArn: expected the ARN of the database's Secrets Manager secret "
            f"(or createDatabase: true), got {database.secret_arn!r}"
        )
    if not database.create and not _CLUSTER_RESOURCE_ID.match(database.cluster_resource_id):
        raise StackConfigError(
            "dbClusterResourceId: expected the referenced cluster's resource id (cluster-…, "
            "`aws rds describe-db-clusters --query 'DBClusters[].DbClusterResourceId'`) "
            f"or createDatabase: true, got {database.cluster_resource_id!r}"
        )
    if database.create and database.backup_retention_days < 7:
        raise StackConfigError(
            f"dbBackupRetentionDays: expected at least 7, got {database.backup_retention_days}"
        )
    if database.min_capacity > database.max_capacity:
        raise StackConfigError(
            f"dbMinCapacity ({database.min_capacity}) is above dbMaxCapacity "
            f"({database.max_capacity})"
        )
    bad_tenants = [t for t in settings.schedule.tenants if not _TENANT.match(t)]
    if bad_tenants:
        raise StackConfigError(f"scheduleTenants: not tenant ids: {bad_tenants}")
    validate_dispatch(settings.dispatch)
    if settings.ledger_retention_days < MIN_LEDGER_RETENTION_DAYS:
        raise StackConfigError(
            f"ledgerRetentionDays: expected at least {MIN_LEDGER_RETENTION_DAYS} days "
            f"(a whole month partition plus margin), got {settings.ledger_retention_days}"
        )
    return settings


def load_settings(config: pulumi.Config | None = None, stack: str | None = None) -> StackSettings:
    """Read the current stack's configuration once and validate it."""
    config = config or pulumi.Config(PROJECT)
    settings = StackSettings(
        project=PROJECT,
        stack=stack or pulumi.get_stack(),
        disparo_enabled=config.require_bool("disparoEnabled"),
        sandbox_recipients=_strings(config, "sandboxRecipients"),
        alert_emails=_strings(config, "alertEmails"),
        log_retention_days=config.require_int("logRetentionDays"),
        deletion_protection=config.require_bool("deletionProtection"),
        lambda_runtime=config.require("lambdaRuntime"),
        lambda_architecture=config.require("lambdaArchitecture"),
        dry_run_timeout_s=_in_range(
            "dryRunTimeoutSeconds", config.require_int("dryRunTimeoutSeconds"), 1, 900
        ),
        dry_run_memory_mb=_in_range(
            "dryRunMemoryMb", config.require_int("dryRunMemoryMb"), 128, 10240
        ),
        dry_run_reserved_concurrency=_in_range(
            "dryRunReservedConcurrency", config.require_int("dryRunReservedConcurrency"), 1, 1000
        ),
        async_max_retry_attempts=_in_range(
            "asyncMaxRetryAttempts", config.require_int("asyncMaxRetryAttempts"), 0, 2
        ),
        async_max_event_age_s=_in_range(
            "asyncMaxEventAgeSeconds", config.require_int("asyncMaxEventAgeSeconds"), 60, 21600
        ),
        # Keys whose default is "" use get(): an empty string is a value, not a missing key.
        dry_run_artifact_key=config.get("dryRunArtifactKey") or "",
        migrate_artifact_key=config.get("migrateArtifactKey") or "",
        vpc_subnet_ids=_strings(config, "vpcSubnetIds"),
        vpc_security_group_ids=_strings(config, "vpcSecurityGroupIds"),
        database=DatabaseSettings(
            create=config.require_bool("createDatabase"),
            secret_arn=config.get("dbSecretArn") or "",
            endpoint=config.get("dbEndpoint") or "",
            cluster_resource_id=config.get("dbClusterResourceId") or "",
            name=config.require("dbName"),
            min_capacity=_capacity(config, "dbMinCapacity"),
            max_capacity=_capacity(config, "dbMaxCapacity"),
            backup_retention_days=config.require_int("dbBackupRetentionDays"),
        ),
        schedule=ScheduleSettings(
            tenants=_strings(config, "scheduleTenants"),
            expression=config.require("scheduleExpression"),
            batch_size=_in_range(
                "scheduleBatchSize", config.require_int("scheduleBatchSize"), 1, 1000
            ),
        ),
        dispatch=DispatchSettings(
            whatsapp_api_version=config.require("whatsappApiVersion"),
            ses_identities=_strings(config, "sesIdentities"),
            unsubscribe_url=config.get("unsubscribeUrl") or "",
            send_concurrency=_in_range(
                "sendConcurrency",
                config.require_int("sendConcurrency"),
                MIN_SEND_CONCURRENCY,
                MAX_SEND_CONCURRENCY,
            ),
        ),
        metrics_namespace=config.require("metricsNamespace"),
        ledger_retention_days=config.require_int("ledgerRetentionDays"),
    )
    return validate(settings)
