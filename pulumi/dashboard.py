"""The CloudWatch dashboard of the dry runs: decisions, reasons, errors and duration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi_aws as aws

import pulumi

CHANNELS = ("whatsapp", "email", "calendar", "none")
ACTIONS = ("would_send", "skipped", "deferred")


@dataclass(frozen=True)
class DashboardArgs:
    """What the dashboard shows."""

    dashboard_name: str
    region: pulumi.Input[str]
    dry_run_function_name: pulumi.Input[str]
    metrics_namespace: str
    service_name: str


def _widget(
    title: str, metrics: list[Any], *, x: int, y: int, region: Any, stat: str = "Sum"
) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "region": region,
            "stat": stat,
            "period": 300,
            "view": "timeSeries",
            "stacked": stat == "Sum",
            "metrics": metrics,
        },
    }


class Dashboard(pulumi.ComponentResource):
    """One dashboard per stack."""

    def __init__(
        self, name: str, args: DashboardArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:dashboard:Dashboard", name, None, opts)
        ns, service, fn = args.metrics_namespace, args.service_name, args.dry_run_function_name
        decisions = [
            [ns, "Decisions", "service", service, "channel", channel, "action", action]
            for channel in CHANNELS
            for action in ACTIONS
        ]
        reason_search = (
            f'SEARCH(\'{{{ns},service,action,reason}} MetricName="DecisionReasons" '
            f'service="{service}" (action="skipped" OR action="deferred")\', \'Sum\', 300)'
        )
        body = {
            "widgets": [
                _widget("Decisions by channel and action", decisions, x=0, y=0, region=args.region),
                _widget(
                    "Skipped and deferred by reason",
                    [[{"expression": reason_search, "id": "reasons"}]],
                    x=12,
                    y=0,
                    region=args.region,
                ),
                _widget(
                    "Errors",
                    [
                        ["AWS/Lambda", "Errors", "FunctionName", fn],
                        [ns, "Errors", "service", service],
                        [ns, "RejectedEvents", "service", service],
                    ],
                    x=0,
                    y=6,
                    region=args.region,
                ),
                _widget(
                    "Duration (ms)",
                    [
                        ["AWS/Lambda", "Duration", "FunctionName", fn, {"stat": "Average"}],
                        ["AWS/Lambda", "Duration", "FunctionName", fn, {"stat": "p99"}],
                        ["AWS/Lambda", "Duration", "FunctionName", fn, {"stat": "Maximum"}],
                    ],
                    x=12,
                    y=6,
                    region=args.region,
                    stat="Average",
                ),
                # Live mode: what the providers answered, and the channels they paused.
                _widget(
                    "Live sends by outcome",
                    [
                        [ns, "DispatchSent", "service", service],
                        [ns, "DispatchFailed", "service", service],
                        [ns, "DispatchUnknown", "service", service],
                        [ns, "ChannelPaused", "service", service],
                    ],
                    x=0,
                    y=12,
                    region=args.region,
                ),
            ]
        }
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=args.dashboard_name,
            dashboard_body=pulumi.Output.json_dumps(body),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"dashboardName": self.dashboard.dashboard_name})
