"""Aurora PostgreSQL: referenced from config by default, or created as Serverless v2."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws
from config import DatabaseSettings

import pulumi


@dataclass(frozen=True)
class DatabaseArgs:
    """What the database needs from the stack."""

    settings: DatabaseSettings
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    deletion_protection: bool
    tags: dict[str, str]


class Database(pulumi.ComponentResource):
    """Exposes ``secret_arn``, ``endpoint`` and ``name`` whichever way the database exists."""

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:database:Database", name, None, opts)
        settings = args.settings
        self.name = settings.name
        if not settings.create:
            self.secret_arn: pulumi.Output[str] = pulumi.Output.from_input(settings.secret_arn)
            self.endpoint: pulumi.Output[str] = pulumi.Output.from_input(settings.endpoint)
            self.register_outputs({"secretArn": self.secret_arn, "created": False})
            return
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=list(args.subnet_ids), tags=args.tags, opts=child
        )
        self.cluster = aws.rds.Cluster(
            f"{name}-cluster",
            engine="aurora-postgresql",
            engine_mode="provisioned",
            engine_version="16.6",
            database_name=settings.name,
            master_username="micro_agent_admin",
            manage_master_user_password=True,
            iam_database_authentication_enabled=True,
            storage_encrypted=True,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=list(args.security_group_ids),
            backup_retention_period=settings.backup_retention_days,
            enabled_cloudwatch_logs_exports=["postgresql"],
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=not args.deletion_protection,
            final_snapshot_identifier=(
                f"{pulumi.get_project()}-{pulumi.get_stack()}-final"
                if args.deletion_protection
                else None
            ),
            copy_tags_to_snapshot=True,
            serverlessv2_scaling_configuration=aws.rds.ClusterServerlessv2ScalingConfigurationArgs(
                min_capacity=settings.min_capacity, max_capacity=settings.max_capacity
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.deletion_protection),
        )
        aws.rds.ClusterInstance(
            f"{name}-writer",
            cluster_identifier=self.cluster.id,
            instance_class="db.serverless",
            engine=aws.rds.EngineType.AURORA_POSTGRESQL,
            engine_version=self.cluster.engine_version,
            db_subnet_group_name=subnets.name,
            publicly_accessible=False,
            tags=args.tags,
            opts=child,
        )
        self.secret_arn = self.cluster.master_user_secrets.apply(
            lambda secrets: (secrets[0].secret_arn or "") if secrets else ""
        )
        self.endpoint = self.cluster.endpoint
        self.register_outputs({"secretArn": self.secret_arn, "endpoint": self.endpoint})
