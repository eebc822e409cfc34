"""CloudWatch alarms, every one with the alerts topic as its alarm action."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws

import pulumi


@dataclass(frozen=True)
class AlarmsArgs:
    """What the alarms watch and where they notify."""

    dry_run_function_name: pulumi.Input[str]
    migrate_function_name: pulumi.Input[str]
    dry_run_timeout_s: int
    topic_arn: pulumi.Input[str]
    metrics_namespace: str
    service_name: str
    tags: dict[str, str]


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm: a metric, its statistic over 5 minutes, and the threshold it must not pass."""

    key: str
    metric: str
    namespace: str
    dimensions: dict[str, pulumi.Input[str]]
    statistic: str
    threshold: float
    description: str


class Alarms(pulumi.ComponentResource):
    """Errors, throttles, duration near the timeout, migration errors, rejected events."""

    def __init__(
        self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:alarms:Alarms", name, None, opts)
        dry_run = {"FunctionName": args.dry_run_function_name}
        specs = [
            AlarmSpec(
                "dry-run-errors",
                "Errors",
                "AWS/Lambda",
                dry_run,
                "Sum",
                0,
                "The dry-run function raised (database down, timeout, live mode refused).",
            ),
            AlarmSpec(
                "dry-run-throttles",
                "Throttles",
                "AWS/Lambda",
                dry_run,
                "Sum",
                0,
                "The dry-run function was throttled (reserved concurrency reached).",
            ),
            # 80 % of the timeout, in milliseconds: a run this slow is about to time out.
            AlarmSpec(
                "dry-run-duration",
                "Duration",
                "AWS/Lambda",
                dry_run,
                "Maximum",
                args.dry_run_timeout_s * 1000 * 0.8,
                "A dry run took over 80% of the function timeout.",
            ),
            AlarmSpec(
                "migrate-errors",
                "Errors",
                "AWS/Lambda",
                {"FunctionName": args.migrate_function_name},
                "Sum",
                0,
                "The migration runner failed: the schema may be behind the code.",
            ),
            AlarmSpec(
                "rejected-events",
                "RejectedEvents",
                args.metrics_namespace,
                {"service": args.service_name},
                "Sum",
                0,
                "The dry-run function rejected an invocation as bad input.",
            ),
        ]
        self.alarms = {
            spec.key: aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}",
                alarm_description=spec.description,
                namespace=spec.namespace,
                metric_name=spec.metric,
                dimensions=spec.dimensions,
                statistic=spec.statistic,
                period=300,
                evaluation_periods=1,
                comparison_operator="GreaterThanThreshold",
                threshold=spec.threshold,
                treat_missing_data="notBreaching",
                alarm_actions=[args.topic_arn],
                ok_actions=[args.topic_arn],
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for spec in specs
        }
        self.register_outputs({key: alarm.arn for key, alarm in self.alarms.items()})
