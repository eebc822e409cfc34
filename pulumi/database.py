"""Aurora PostgreSQL: referenced from config by default, or created as Serverless v2."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws
from config import DatabaseSettings

import pulumi

# Aurora PostgreSQL's port; a created cluster is given it explicitly, a referenced one uses it.
POSTGRES_PORT = 5432


def db_user_arn(
    region: pulumi.Input[str],
    account_id: pulumi.Input[str],
    cluster_resource_id: pulumi.Input[str],
    user: str,
) -> pulumi.Output[str]:
    """The resource ``rds-db:connect`` names for IAM authentication as one database user."""
    return pulumi.Output.concat(
        "arn:aws:rds-db:", region, ":", account_id, ":dbuser:", cluster_resource_id, "/", user
    )


@dataclass(frozen=True)
class DatabaseArgs:
    """What the database needs from the stack."""

    settings: DatabaseSettings
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    deletion_protection: bool
    tags: dict[str, str]


class Database(pulumi.ComponentResource):
    """The database, created or referenced, seen the same way by the rest of the program.

    Exposes ``secret_arn`` (the master secret), ``endpoint``, ``port``, ``name`` and
    ``cluster_resource_id`` (what IAM database authentication names) either way.
    """

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:database:Database", name, None, opts)
        settings = args.settings
        self.name = settings.name
        self.port = str(POSTGRES_PORT)
        if not settings.create:
            self.secret_arn: pulumi.Output[str] = pulumi.Output.from_input(settings.secret_arn)
            self.endpoint: pulumi.Output[str] = pulumi.Output.from_input(settings.endpoint)
            self.cluster_resource_id: pulumi.Output[str] = pulumi.Output.from_input(
                settings.cluster_resource_id
            )
            self.register_outputs(
                {
                    "secretArn": self.secret_arn,
                    "clusterResourceId": self.cluster_resource_id,
                    "created": False,
                }
            )
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
            port=POSTGRES_PORT,
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
        self.cluster_resource_id = self.cluster.cluster_resource_id
        self.register_outputs(
            {
                "secretArn": self.secret_arn,
                "endpoint": self.endpoint,
                "clusterResourceId": self.cluster_resource_id,
            }
        )
