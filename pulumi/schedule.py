"""Optional EventBridge Scheduler invocations of the dry-run, one schedule per tenant."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi_aws as aws
from policies import assume_role, document, statement

import pulumi


def scheduler_role(
    name: str,
    *,
    function_arn: pulumi.Input[str],
    account_id: pulumi.Input[str],
    sid: str,
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
    description: str | None = None,
) -> aws.iam.Role:
    """A role EventBridge Scheduler assumes, allowed to invoke exactly one function."""
    role = aws.iam.Role(
        f"{name}-role",
        description=description,
        assume_role_policy=assume_role("scheduler.amazonaws.com", account_id),
        tags=tags,
        opts=opts,
    )
    aws.iam.RolePolicy(
        f"{name}-invoke",
        role=role.id,
        policy=document(statement(sid, ["lambda:InvokeFunction"], [function_arn])),
        opts=opts,
    )
    return role


@dataclass(frozen=True)
class DryRunScheduleArgs:
    """Which tenants, how often, how many leads."""

    function_arn: pulumi.Input[str]
    tenants: Sequence[str]
    expression: str
    batch_size: int
    account_id: pulumi.Input[str]
    tags: dict[str, str]


class DryRunSchedule(pulumi.ComponentResource):
    """A scheduler role that may invoke only the dry-run function, and a schedule per tenant."""

    def __init__(
        self, name: str, args: DryRunScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:schedule:DryRunSchedule", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = scheduler_role(
            name,
            function_arn=args.function_arn,
            account_id=args.account_id,
            sid="InvokeDryRun",
            tags=args.tags,
            opts=child,
        )
        self.schedules = [
            aws.scheduler.Schedule(
                f"{name}-{tenant}",
                description=f"Dry run for tenant {tenant}",
                schedule_expression=args.expression,
                flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
                target=aws.scheduler.ScheduleTargetArgs(
                    arn=args.function_arn,
                    role_arn=role.arn,
                    input=json.dumps({"tenantId": tenant, "batchSize": args.batch_size}),
                    retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                        maximum_retry_attempts=0
                    ),
                ),
                opts=child,
            )
            for tenant in args.tenants
        ]
        self.register_outputs({"schedules": [s.name for s in self.schedules]})
