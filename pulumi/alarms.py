"""CloudWatch alarms, every one with the alerts topic as its alarm action.

The services' own metrics are EMF in ``metricsNamespace`` with the Powertools ``service``
dimension (``micro-agent-dry-run`` for the handler, ``micro-agent-sweeper`` for the sweeper).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws

import pulumi


@dataclass(frozen=True)
class AlarmsArgs:
    """What the alarms watch and where they notify."""

    dry_run_function_name: pulumi.Input[str]
    migrate_function_name: pulumi.Input[str]
    sweeper_function_name: pulumi.Input[str]
    dry_run_timeout_s: int
    topic_arn: pulumi.Input[str]
    metrics_namespace: str
    service_name: str
    sweeper_service_name: str
    tags: dict[str, str]


# The dry-run's count of live sends per outcome, by the query id the failed-rate math uses.
DISPATCH_OUTCOMES = {
    "sent": "DispatchSent",
    "failed": "DispatchFailed",
    "unknown": "DispatchUnknown",
}
FAILED_RATE_THRESHOLD = 0.2
FAILED_RATE_PERIOD_S = 900
# Below this many sends in the period the rate is noise (one failure out of two is not 50 %).
FAILED_RATE_MIN_SENDS = 10


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
    """Errors, throttles, duration near the timeout, migration and sweeper errors, rejected
    events, and live dispatch: unknown outcomes, expired claims, paused channels, failed rate."""

    def __init__(
        self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:alarms:Alarms", name, None, opts)
        dry_run = {"FunctionName": args.dry_run_function_name}
        handler: dict[str, pulumi.Input[str]] = {"service": args.service_name}
        sweeper: dict[str, pulumi.Input[str]] = {"service": args.sweeper_service_name}
        specs = [
            AlarmSpec(
                "dry-run-errors",
                "Errors",
                "AWS/Lambda",
                dry_run,
                "Sum",
                0,
                "The dry-run function raised (database down, timeout, a secret unreadable).",
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
                handler,
                "Sum",
                0,
                "The dry-run function rejected an invocation as bad input.",
            ),
            AlarmSpec(
                "sweeper-errors",
                "Errors",
                "AWS/Lambda",
                {"FunctionName": args.sweeper_function_name},
                "Sum",
                0,
                "The claim sweeper failed: claimed dispatches may stay claimed.",
            ),
            AlarmSpec(
                "dispatch-unknown",
                "DispatchUnknown",
                args.metrics_namespace,
                handler,
                "Sum",
                0,
                "Sends with unknown outcome: a provider call timed out or answered ambiguously; "
                "never resent automatically, check the provider before acting.",
            ),
            AlarmSpec(
                "claims-expired",
                "ClaimsExpired",
                args.metrics_namespace,
                sweeper,
                "Sum",
                0,
                "The sweeper turned dispatches claimed past the dry-run timeout into unknown.",
            ),
            AlarmSpec(
                "channel-paused",
                "ChannelPaused",
                args.metrics_namespace,
                handler,
                "Sum",
                0,
                "A tenant's channel was paused (WhatsApp 131048/368/190: spam rate limit, "
                "policy restriction, expired token).",
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
        self.alarms["dispatch-failed-rate"] = self._failed_rate(name, args)
        self.register_outputs({key: alarm.arn for key, alarm in self.alarms.items()})

    def _failed_rate(self, name: str, args: AlarmsArgs) -> aws.cloudwatch.MetricAlarm:
        """Failed / (sent + failed + unknown) over 15 minutes, once there is volume to judge."""
        # A period with no sends has no datapoints: FILL them with 0 so the sum exists, and IF
        # answers 0 (not breaching) until the period holds FAILED_RATE_MIN_SENDS sends.
        sends = " + ".join(f"FILL({key}, 0)" for key in DISPATCH_OUTCOMES)
        queries = [
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=key,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace=args.metrics_namespace,
                    metric_name=metric,
                    dimensions={"service": args.service_name},
                    stat="Sum",
                    period=FAILED_RATE_PERIOD_S,
                ),
                return_data=False,
            )
            for key, metric in DISPATCH_OUTCOMES.items()
        ]
        queries += [
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="sends", expression=sends, label="Live sends", return_data=False
            ),
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="failedrate",
                expression=f"IF(sends >= {FAILED_RATE_MIN_SENDS}, FILL(failed, 0) / sends, 0)",
                label="Failed share of live sends",
                return_data=True,
            ),
        ]
        return aws.cloudwatch.MetricAlarm(
            f"{name}-dispatch-failed-rate",
            alarm_description=(
                f"Over {FAILED_RATE_THRESHOLD:.0%} of live sends failed in 15 minutes "
                f"(at least {FAILED_RATE_MIN_SENDS} sends): a provider, a token or a template "
                "is rejecting them."
            ),
            metric_queries=queries,
            evaluation_periods=1,
            comparison_operator="GreaterThanThreshold",
            threshold=FAILED_RATE_THRESHOLD,
            treat_missing_data="notBreaching",
            alarm_actions=[args.topic_arn],
            ok_actions=[args.topic_arn],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
