"""A Python Lambda with its own log group, least-privilege policy and async invoke config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi_aws as aws
from policies import document, statement

import pulumi

# What Lambda needs in the execution role to attach a function to a VPC, as AWS lists it in
# "Giving Lambda functions access to resources in an Amazon VPC": the ec2 actions of the managed
# AWSLambdaVPCAccessExecutionRole, without its log writes on "*" (which would cancel the
# own-log-group scoping). Resource "*" is AWS's own requirement for them: Describe* works only
# on "*", and the interfaces Lambda creates and deletes have no ids before it creates them.
VPC_NETWORK_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)


@dataclass(frozen=True)
class CodeSource:
    """The zip: a local file (``build/<name>.zip``) or an object in the artifact bucket."""

    path: str | None = None
    s3_bucket: pulumi.Input[str] | None = None
    s3_key: str | None = None


@dataclass(frozen=True)
class SecretAccess:
    """The function reads a Secrets Manager secret (RDS format) to connect."""

    secret_arn: pulumi.Input[str]


@dataclass(frozen=True)
class IamAccess:
    """The function connects with IAM database authentication as one database user."""

    db_user_arn: pulumi.Input[str]


DatabaseAccess = SecretAccess | IamAccess


def database_statement(access: DatabaseAccess) -> dict[str, Any]:
    """The one permission a function needs to reach the database, and no other."""
    if isinstance(access, IamAccess):
        return statement("ConnectAsDatabaseUser", ["rds-db:connect"], [access.db_user_arn])
    return statement("ReadDatabaseSecret", ["secretsmanager:GetSecretValue"], [access.secret_arn])


@dataclass(frozen=True)
class LambdaFunctionArgs:
    """Settings of one function."""

    function_name: str
    description: str
    handler: str
    code: CodeSource
    role: aws.iam.Role
    runtime: str
    architecture: str
    timeout_s: int
    memory_mb: int
    reserved_concurrency: int
    environment: Mapping[str, pulumi.Input[str]]
    subnet_ids: Sequence[str]
    security_group_ids: Sequence[str]
    log_retention_days: int
    alerts_topic_arn: pulumi.Input[str]
    alerts_key_arn: pulumi.Input[str]
    database: DatabaseAccess
    max_retry_attempts: int
    max_event_age_s: int
    tags: dict[str, str]
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    # What this function alone needs beyond logs, database, alerts and VPC (policies.statement).
    statements: Sequence[dict[str, Any]] = field(default_factory=tuple)


class LambdaFunction(pulumi.ComponentResource):
    """One deployable: log group, role policy (VPC access included), function, async config."""

    def __init__(
        self, name: str, args: LambdaFunctionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:function:LambdaFunction", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.depends_on = list(args.depends_on)
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{args.function_name}",
            retention_in_days=args.log_retention_days,
            tags=args.tags,
            opts=child,
        )
        self.policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=args.role.id,
            policy=document(
                statement(
                    "WriteOwnLogs",
                    ["logs:CreateLogStream", "logs:PutLogEvents"],
                    [self.log_group.arn.apply(lambda arn: f"{arn}:*")],
                ),
                database_statement(args.database),
                statement("PublishAlerts", ["sns:Publish"], [args.alerts_topic_arn]),
                statement(
                    "EncryptAlerts", ["kms:GenerateDataKey", "kms:Decrypt"], [args.alerts_key_arn]
                ),
                statement("ManageVpcNetworkInterfaces", VPC_NETWORK_INTERFACE_ACTIONS, ["*"]),
                *args.statements,
            ),
            opts=child,
        )
        code = args.code
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=args.function_name,
            description=args.description,
            role=args.role.arn,
            runtime=args.runtime,
            architectures=[args.architecture],
            handler=args.handler,
            code=pulumi.FileArchive(code.path) if code.path else None,
            s3_bucket=code.s3_bucket if code.path is None else None,
            s3_key=code.s3_key if code.path is None else None,
            timeout=args.timeout_s,
            memory_size=args.memory_mb,
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(args.environment)),
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=list(args.subnet_ids), security_group_ids=list(args.security_group_ids)
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.log_group, self.policy, *args.depends_on],
            ),
        )
        self.invoke_config = aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-async",
            function_name=self.function.name,
            maximum_retry_attempts=args.max_retry_attempts,
            maximum_event_age_in_seconds=args.max_event_age_s,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=args.alerts_topic_arn
                )
            ),
            opts=child,
        )
        self.name = self.function.name
        self.arn = self.function.arn
        self.register_outputs(
            {"functionName": self.function.name, "functionArn": self.function.arn}
        )
