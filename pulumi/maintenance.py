"""The daily ledger maintenance: EventBridge Scheduler invokes the migration runner once a day.

The runner's ``maintain`` action creates the coming months' ``dry_run_log`` partitions and drops
those older than ``LEDGER_RETENTION_DAYS``; it runs on every stack, whatever ``scheduleTenants``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi_aws as aws
from schedule import scheduler_role

import pulumi

MAINTENANCE_INPUT = {"action": "maintain"}
# Once a day, at night in Brazil: away from the dry runs, which contact leads in business hours.
DAILY_EXPRESSION = "cron(17 3 * * ? *)"
TIMEZONE = "America/Sao_Paulo"


@dataclass(frozen=True)
class LedgerMaintenanceArgs:
    """Which function runs the maintenance."""

    function_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    tags: dict[str, str]


class LedgerMaintenance(pulumi.ComponentResource):
    """A scheduler role that may invoke only the migration runner, and its daily schedule."""

    def __init__(
        self, name: str, args: LedgerMaintenanceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:maintenance:LedgerMaintenance", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = scheduler_role(
            name,
            function_arn=args.function_arn,
            account_id=args.account_id,
            sid="InvokeMigrationRunner",
            tags=args.tags,
            opts=child,
            description="Lets EventBridge Scheduler invoke the ledger maintenance",
        )
        self.schedule = aws.scheduler.Schedule(
            f"{name}-daily",
            description="Creates the coming dry_run_log partitions and drops the expired ones",
            schedule_expression=DAILY_EXPRESSION,
            schedule_expression_timezone=TIMEZONE,
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=args.function_arn,
                role_arn=role.arn,
                input=json.dumps(MAINTENANCE_INPUT),
                # Maintenance is idempotent, so retrying a failed delivery does no harm; a run that
                # fails alerts through the runner's on-failure destination and its errors alarm.
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(
                    maximum_retry_attempts=2, maximum_event_age_in_seconds=3600
                ),
            ),
            opts=child,
        )
        self.register_outputs({"schedule": self.schedule.name})
