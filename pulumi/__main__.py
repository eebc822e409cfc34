"""The micro-agent stack: composition only; each concern is a component in its own module.

Order matters where AWS needs it: roles before the alerts key (its policy names them), the
migration Invocation before the dry-run and sweeper functions (an ``up`` leaves the schema
current before the new code runs).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pulumi_aws as aws
from alarms import Alarms, AlarmsArgs
from alerts import AlertsTopic, AlertsTopicArgs
from artifacts import ArtifactBucket, ArtifactBucketArgs
from config import StackSettings, load_settings
from dashboard import Dashboard, DashboardArgs
from database import Database, DatabaseArgs, db_user_arn
from dispatch_secrets import DispatchSecrets, DispatchSecretsArgs
from function import CodeSource, IamAccess, LambdaFunction, LambdaFunctionArgs, SecretAccess
from maintenance import LedgerMaintenance, LedgerMaintenanceArgs
from migration import MigrationRunner, MigrationRunnerArgs, migrations_hash
from roles import FunctionRole, FunctionRoleArgs
from schedule import DryRunSchedule, DryRunScheduleArgs
from ses import SesOutreach, SesOutreachArgs
from sweeper import SweeperSchedule, SweeperScheduleArgs

import pulumi

# Under the CLI the working directory is pulumi/; anchor paths to this file instead.
REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"
MIGRATIONS_DIR = REPO_ROOT / "migrations"

DRY_RUN_SERVICE = "micro-agent-dry-run"
DRY_RUN_HANDLER = "dry_run.handler.lambda_handler"
SWEEPER_SERVICE = "micro-agent-sweeper"
# The sweeper ships in the dry-run's artifact: it shares its settings, ledger and database user.
SWEEPER_HANDLER = "dry_run.sweeper.lambda_handler"
SWEEPER_TIMEOUT_S = 60
SWEEPER_MEMORY_MB = 256
# A claim outlives any invocation that could still be sending it by this margin before the
# sweeper calls its outcome unknown.
CLAIM_EXPIRY_MARGIN_S = 60
MIGRATE_HANDLER = "migrate.handler.lambda_handler"
# The database user the migrations create for the dry-run (granted rds_iam on Aurora). The CLI
# cannot import the service packages, so the name is repeated here; an infra test checks it
# equals dry_run.settings.DATABASE_ROLE.
DRY_RUN_DATABASE_USER = "micro_agent_dry_run"


def code_source(settings_key: str, artifact: str, bucket: ArtifactBucket) -> CodeSource:
    """The uploaded artifact when its key is configured, else the local build."""
    if settings_key:
        return CodeSource(s3_bucket=bucket.bucket.bucket, s3_key=settings_key)
    return CodeSource(path=str(BUILD_DIR / f"{artifact}.zip"))


def database_environment(database: Database, timeout_s: int) -> dict[str, pulumi.Input[str]]:
    """How a function of the dry-run package connects: IAM authentication as its own user."""
    return {
        "DB_IAM_USER": DRY_RUN_DATABASE_USER,
        "DB_HOST": database.endpoint,
        "DB_PORT": database.port,
        "DB_NAME": database.name,
        "DB_CONNECT_TIMEOUT_S": "5",
        "DB_STATEMENT_TIMEOUT_MS": str(min(10_000, timeout_s * 500)),
        "DB_LOCK_TIMEOUT_MS": "3000",
    }


def dry_run_environment(
    settings: StackSettings, database: Database, secrets: DispatchSecrets, ses: SesOutreach
) -> dict[str, pulumi.Input[str]]:
    """The dry-run function's environment: IAM authentication as its own user, secret ARNs
    (never values) and what live dispatch needs."""
    dispatch = settings.dispatch
    return {
        "MICRO_AGENT_DISPARO_ENABLED": "true" if settings.disparo_enabled else "false",
        "MICRO_AGENT_SANDBOX_RECIPIENTS": ",".join(settings.sandbox_recipients),
        **database_environment(database, settings.dry_run_timeout_s),
        "POWERTOOLS_SERVICE_NAME": DRY_RUN_SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": settings.metrics_namespace,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "WHATSAPP_API_VERSION": dispatch.whatsapp_api_version,
        "TENANT_SECRETS_PREFIX": secrets.tenant_secrets_prefix,
        "UNSUBSCRIBE_URL": dispatch.unsubscribe_url,
        "UNSUBSCRIBE_SECRET_ARN": secrets.unsubscribe_secret_arn,
        "SES_CONFIGURATION_SET": ses.configuration_set_name,
        "SEND_CONCURRENCY": str(dispatch.send_concurrency),
    }


def sweeper_environment(
    settings: StackSettings, database: Database
) -> dict[str, pulumi.Input[str]]:
    """The sweeper's environment: the dry-run's database user, and when a claim has expired."""
    return {
        **database_environment(database, SWEEPER_TIMEOUT_S),
        "POWERTOOLS_SERVICE_NAME": SWEEPER_SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": settings.metrics_namespace,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "CLAIM_EXPIRY_S": str(settings.dry_run_timeout_s + CLAIM_EXPIRY_MARGIN_S),
    }


def migrate_environment(
    settings: StackSettings, database: Database
) -> dict[str, pulumi.Input[str]]:
    """The migration runner's environment: the master secret (it creates roles and runs DDL)."""
    return {
        "DB_SECRET_ARN": database.secret_arn,
        "DB_HOST": database.endpoint,
        "DB_NAME": database.name,
        "LEDGER_RETENTION_DAYS": str(settings.ledger_retention_days),
    }


def main() -> dict[str, pulumi.ComponentResource]:
    """Declare the stack; return its components (the infra tests inspect them)."""
    settings = load_settings()
    account_id = aws.get_caller_identity_output().account_id
    region = aws.get_region_output().region

    artifacts = ArtifactBucket("artifacts", ArtifactBucketArgs(tags=settings.tags("shared")))
    dry_run_role = FunctionRole(
        "dry-run", FunctionRoleArgs("Runs the dry-run micro-agent", settings.tags("dry-run"))
    )
    migrate_role = FunctionRole(
        "migrate", FunctionRoleArgs("Runs the schema migrations", settings.tags("migrate"))
    )
    sweeper_role = FunctionRole(
        "sweeper",
        FunctionRoleArgs("Turns expired dispatch claims into unknown", settings.tags("sweeper")),
    )
    alerts = AlertsTopic(
        "alerts",
        AlertsTopicArgs(
            account_id=account_id,
            publisher_role_arns=[dry_run_role.arn, migrate_role.arn, sweeper_role.arn],
            emails=settings.alert_emails,
            tags=settings.tags("shared"),
        ),
    )
    database = Database(
        "database",
        DatabaseArgs(
            settings=settings.database,
            subnet_ids=settings.vpc_subnet_ids,
            security_group_ids=settings.vpc_security_group_ids,
            deletion_protection=settings.deletion_protection,
            tags=settings.tags("database"),
        ),
    )

    secrets = DispatchSecrets(
        "dispatch-secrets",
        DispatchSecretsArgs(
            path=f"{settings.project}/{settings.stack}",
            region=region,
            account_id=account_id,
            tags=settings.tags("dry-run"),
        ),
    )
    ses = SesOutreach(
        "ses",
        SesOutreachArgs(
            name_prefix=settings.prefix,
            region=region,
            account_id=account_id,
            identities=settings.dispatch.ses_identities,
            tags=settings.tags("dry-run"),
        ),
    )

    # What every function shares; each call adds its own settings.
    function_args = functools.partial(
        LambdaFunctionArgs,
        runtime=settings.lambda_runtime,
        architecture=settings.lambda_architecture,
        subnet_ids=settings.vpc_subnet_ids,
        security_group_ids=settings.vpc_security_group_ids,
        log_retention_days=settings.log_retention_days,
        alerts_topic_arn=alerts.topic_arn,
        alerts_key_arn=alerts.key_arn,
    )

    migrator = MigrationRunner(
        "migrate",
        MigrationRunnerArgs(
            function=function_args(
                function_name=f"{settings.prefix}-migrate",
                description="Applies the forward-only SQL migrations",
                handler=MIGRATE_HANDLER,
                code=code_source(settings.migrate_artifact_key, "migrate", artifacts),
                role=migrate_role.role,
                timeout_s=900,
                memory_mb=512,
                reserved_concurrency=1,
                environment=migrate_environment(settings, database),
                database=SecretAccess(database.secret_arn),
                max_retry_attempts=0,
                max_event_age_s=settings.async_max_event_age_s,
                tags=settings.tags("migrate"),
            ),
            migrations_hash=migrations_hash(MIGRATIONS_DIR),
        ),
    )
    # The sweeper connects as the dry-run's database user: it updates the same ledger.
    dry_run_user = IamAccess(
        db_user_arn(region, account_id, database.cluster_resource_id, DRY_RUN_DATABASE_USER)
    )
    dry_run = LambdaFunction(
        "dry-run",
        function_args(
            function_name=f"{settings.prefix}-dry-run",
            description="Decides outreach for due leads; records intents while the flag is off",
            handler=DRY_RUN_HANDLER,
            code=code_source(settings.dry_run_artifact_key, "dry_run", artifacts),
            role=dry_run_role.role,
            timeout_s=settings.dry_run_timeout_s,
            memory_mb=settings.dry_run_memory_mb,
            reserved_concurrency=settings.dry_run_reserved_concurrency,
            environment=dry_run_environment(settings, database, secrets, ses),
            database=dry_run_user,
            max_retry_attempts=settings.async_max_retry_attempts,
            max_event_age_s=settings.async_max_event_age_s,
            tags=settings.tags("dry-run"),
            depends_on=[migrator.invocation],
            statements=[secrets.read_statement(), *ses.send_statements()],
        ),
    )
    sweeper = LambdaFunction(
        "sweeper",
        function_args(
            function_name=f"{settings.prefix}-sweeper",
            description="Turns dispatches claimed past the dry-run timeout into unknown",
            handler=SWEEPER_HANDLER,
            code=code_source(settings.dry_run_artifact_key, "dry_run", artifacts),
            role=sweeper_role.role,
            timeout_s=SWEEPER_TIMEOUT_S,
            memory_mb=SWEEPER_MEMORY_MB,
            reserved_concurrency=1,
            environment=sweeper_environment(settings, database),
            database=dry_run_user,
            # A lost sweep is redone by the next one, five minutes later.
            max_retry_attempts=0,
            max_event_age_s=300,
            tags=settings.tags("sweeper"),
            depends_on=[migrator.invocation],
        ),
    )
    alarms = Alarms(
        "alarms",
        AlarmsArgs(
            dry_run_function_name=dry_run.name,
            migrate_function_name=migrator.function.name,
            sweeper_function_name=sweeper.name,
            dry_run_timeout_s=settings.dry_run_timeout_s,
            topic_arn=alerts.topic_arn,
            metrics_namespace=settings.metrics_namespace,
            service_name=DRY_RUN_SERVICE,
            sweeper_service_name=SWEEPER_SERVICE,
            tags=settings.tags("shared"),
        ),
    )
    dashboard = Dashboard(
        "dashboard",
        DashboardArgs(
            dashboard_name=f"{settings.prefix}-dry-run",
            region=region,
            dry_run_function_name=dry_run.name,
            metrics_namespace=settings.metrics_namespace,
            service_name=DRY_RUN_SERVICE,
        ),
    )
    maintenance = LedgerMaintenance(
        "maintenance",
        LedgerMaintenanceArgs(
            function_arn=migrator.function.arn,
            account_id=account_id,
            tags=settings.tags("migrate"),
        ),
    )
    sweep = SweeperSchedule(
        "sweep",
        SweeperScheduleArgs(
            function_arn=sweeper.arn, account_id=account_id, tags=settings.tags("sweeper")
        ),
    )
    components: dict[str, pulumi.ComponentResource] = {
        "artifacts": artifacts,
        "alerts": alerts,
        "database": database,
        "dispatch_secrets": secrets,
        "ses": ses,
        "migrate": migrator,
        "dry_run": dry_run,
        "sweeper": sweeper,
        "sweep": sweep,
        "maintenance": maintenance,
        "alarms": alarms,
        "dashboard": dashboard,
    }
    if settings.schedule.tenants:
        components["schedule"] = DryRunSchedule(
            "schedule",
            DryRunScheduleArgs(
                function_arn=dry_run.arn,
                tenants=settings.schedule.tenants,
                expression=settings.schedule.expression,
                batch_size=settings.schedule.batch_size,
                account_id=account_id,
                tags=settings.tags("dry-run"),
            ),
        )

    pulumi.export("dryRunFunctionName", dry_run.name)
    pulumi.export("dryRunFunctionArn", dry_run.arn)
    pulumi.export("migrateFunctionName", migrator.function.name)
    pulumi.export("migrateFunctionArn", migrator.function.arn)
    pulumi.export("artifactBucketName", artifacts.bucket.bucket)
    pulumi.export("alertsTopicArn", alerts.topic_arn)
    pulumi.export("dashboardName", dashboard.dashboard.dashboard_name)
    pulumi.export("migrationsHash", migrator.invocation.triggers)
    pulumi.export("sweeperFunctionName", sweeper.name)
    pulumi.export("sesConfigurationSetName", ses.configuration_set_name)
    # The inbound webhook subscribes to it (SES bounces, complaints, deliveries).
    pulumi.export("sesEventsTopicArn", ses.topic_arn)
    pulumi.export("unsubscribeSecretArn", secrets.unsubscribe_secret_arn)
    return components


if __name__ == "__main__":
    main()
