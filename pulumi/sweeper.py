"""The claim sweeper's schedule: EventBridge Scheduler invokes the sweeper every five minutes.

The sweeper (``dry_run.sweeper.lambda_handler``) turns ``claimed`` dispatches older than
``CLAIM_EXPIRY_S`` into ``unknown``. It runs on every stack whatever the flag: with no live sends
it finds nothing, and turning the flag on stays a change of one environment variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi_aws as aws
from schedule import scheduler_role

import pulumi

SWEEP_EXPRESSION = "rate(5 minutes)"
SWEEP_INPUT: dict[str, object] = {}


@dataclass(frozen=True)
class SweeperScheduleArgs:
    """Which function sweeps."""

    function_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    tags: dict[str, str]


class SweeperSchedule(pulumi.ComponentResource):
    """A scheduler role that may invoke only the sweeper, and its five-minute schedule."""

    def __init__(
        self, name: str, args: SweeperScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:sweeper:SweeperSchedule", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = scheduler_role(
            name,
            function_arn=args.function_arn,
            account_id=args.account_id,
            sid="InvokeSweeper",
            tags=args.tags,
            opts=child,
            description="Lets EventBridge Scheduler invoke the claim sweeper",
        )
        self.schedule = aws.scheduler.Schedule(
            f"{name}-every-5-minutes",
            description="Turns dispatches claimed longer than the dry-run timeout into unknown",
            schedule_expression=SWEEP_EXPRESSION,
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=args.function_arn,
                role_arn=role.arn,
                input=json.dumps(SWEEP_INPUT),
                # The next run, five minutes later, sweeps whatever a lost one would have.
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(maximum_retry_attempts=0),
            ),
            opts=child,
        )
        self.register_outputs({"schedule": self.schedule.name})
