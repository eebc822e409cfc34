"""The alerts topic: SNS encrypted with a customer-managed KMS key that alarms can use.

CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed ``alias/aws/sns``
key (its policy cannot be changed to let CloudWatch use it), so every alarm would be dropped
silently; hence a key of our own whose policy names CloudWatch and the publishing roles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi_aws as aws
from policies import (
    KEY_ADMIN_ACTIONS,
    KEY_USE_ACTIONS,
    TOPIC_OWNER_ACTIONS,
    document,
    statement,
)

import pulumi


@dataclass(frozen=True)
class AlertsTopicArgs:
    """Settings of the alerts topic."""

    account_id: pulumi.Input[str]
    publisher_role_arns: Sequence[pulumi.Input[str]]
    emails: Sequence[str]
    tags: dict[str, str]


class AlertsTopic(pulumi.ComponentResource):
    """The topic alarms and the Lambda on-failure destinations publish to."""

    def __init__(
        self, name: str, args: AlertsTopicArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:alerts:AlertsTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        root = pulumi.Output.concat("arn:aws:iam::", args.account_id, ":root")
        same_account = {"StringEquals": {"aws:SourceAccount": args.account_id}}
        self.key = aws.kms.Key(
            f"{name}-key",
            description="Encrypts the micro-agent alerts topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=document(
                statement("AccountAdministers", KEY_ADMIN_ACTIONS, ["*"], principal={"AWS": root}),
                statement(
                    "CloudWatchAlarmsPublish",
                    KEY_USE_ACTIONS,
                    ["*"],
                    principal={"Service": "cloudwatch.amazonaws.com"},
                    condition=same_account,
                ),
                statement(
                    "FunctionsPublishOnFailure",
                    KEY_USE_ACTIONS,
                    ["*"],
                    principal={"AWS": list(args.publisher_role_arns)},
                ),
            ),
            tags=args.tags,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-key-alias",
            name=f"alias/{pulumi.get_project()}-{pulumi.get_stack()}-alerts",
            target_key_id=self.key.key_id,
            opts=child,
        )
        self.topic = aws.sns.Topic(
            f"{name}-topic", kms_master_key_id=self.key.arn, tags=args.tags, opts=child
        )
        aws.sns.TopicPolicy(
            f"{name}-topic-policy",
            arn=self.topic.arn,
            policy=document(
                statement(
                    "AccountOwnsTopic",
                    TOPIC_OWNER_ACTIONS,
                    [self.topic.arn],
                    principal={"AWS": root},
                ),
                statement(
                    "CloudWatchAlarmsPublish",
                    ["sns:Publish"],
                    [self.topic.arn],
                    principal={"Service": "cloudwatch.amazonaws.com"},
                    condition=same_account,
                ),
            ),
            opts=child,
        )
        for index, email in enumerate(args.emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{index}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=child,
            )
        self.topic_arn = self.topic.arn
        self.key_arn = self.key.arn
        self.register_outputs({"topicArn": self.topic.arn, "keyArn": self.key.arn})
