"""Outreach email through Amazon SES v2: the configuration set every send names, and its events.

The configuration set requires TLS, tracks reputation and suppresses addresses that bounced or
complained. Its event destination publishes every sending event to an SNS topic of our own (the
inbound webhook subscribes to it and resolves dispatches by ``mail.messageId``). The topic is
encrypted with a customer key, because SES cannot use the AWS-managed ``alias/aws/sns`` key;
both the key and the topic let SES in only for this account's configuration set, as AWS's CDK
does for an SNS event destination (confused-deputy protection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi_aws as aws
from policies import (
    KEY_ADMIN_ACTIONS,
    KEY_USE_ACTIONS,
    TOPIC_OWNER_ACTIONS,
    document,
    statement,
)

import pulumi

SES_SERVICE = "ses.amazonaws.com"
# Every event the ledger or an operator acts on; no OPEN or CLICK (no tracking rewrites links).
EVENT_TYPES = (
    "SEND",
    "REJECT",
    "BOUNCE",
    "COMPLAINT",
    "DELIVERY",
    "DELIVERY_DELAY",
    "RENDERING_FAILURE",
)
SUPPRESSED_REASONS = ("BOUNCE", "COMPLAINT")
SEND_ACTIONS = ("ses:SendEmail", "ses:SendRawEmail")


@dataclass(frozen=True)
class SesOutreachArgs:
    """Names, the account, and the verified identities the senders may use."""

    name_prefix: str
    region: pulumi.Input[str]
    account_id: pulumi.Input[str]
    identities: Sequence[str]
    tags: dict[str, str]


class SesOutreach(pulumi.ComponentResource):
    """Configuration set, events topic (with its key and policy) and the event destination."""

    def __init__(
        self, name: str, args: SesOutreachArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:ses:SesOutreach", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self._region = args.region
        self._account_id = args.account_id
        self._identities = tuple(args.identities)
        self.configuration_set = aws.sesv2.ConfigurationSet(
            f"{name}-configuration-set",
            configuration_set_name=f"{args.name_prefix}-outreach",
            delivery_options=aws.sesv2.ConfigurationSetDeliveryOptionsArgs(tls_policy="REQUIRE"),
            reputation_options=aws.sesv2.ConfigurationSetReputationOptionsArgs(
                reputation_metrics_enabled=True
            ),
            sending_options=aws.sesv2.ConfigurationSetSendingOptionsArgs(sending_enabled=True),
            suppression_options=aws.sesv2.ConfigurationSetSuppressionOptionsArgs(
                suppressed_reasons=list(SUPPRESSED_REASONS)
            ),
            tags=args.tags,
            opts=child,
        )
        root = pulumi.Output.concat("arn:aws:iam::", args.account_id, ":root")
        from_this_configuration_set = {
            "StringEquals": {
                "aws:SourceAccount": args.account_id,
                "aws:SourceArn": self.configuration_set.arn,
            }
        }
        self.key = aws.kms.Key(
            f"{name}-events-key",
            description="Encrypts the micro-agent SES events topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=document(
                statement("AccountAdministers", KEY_ADMIN_ACTIONS, ["*"], principal={"AWS": root}),
                statement(
                    "SesPublishesEvents",
                    KEY_USE_ACTIONS,
                    ["*"],
                    principal={"Service": SES_SERVICE},
                    condition=from_this_configuration_set,
                ),
            ),
            tags=args.tags,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-events-key-alias",
            name=f"alias/{args.name_prefix}-ses-events",
            target_key_id=self.key.key_id,
            opts=child,
        )
        self.topic = aws.sns.Topic(
            f"{name}-events-topic",
            name=f"{args.name_prefix}-ses-events",
            kms_master_key_id=self.key.arn,
            tags=args.tags,
            opts=child,
        )
        self.topic_policy = aws.sns.TopicPolicy(
            f"{name}-events-topic-policy",
            arn=self.topic.arn,
            policy=document(
                statement(
                    "AccountOwnsTopic",
                    TOPIC_OWNER_ACTIONS,
                    [self.topic.arn],
                    principal={"AWS": root},
                ),
                statement(
                    "SesPublishesEvents",
                    ["sns:Publish"],
                    [self.topic.arn],
                    principal={"Service": SES_SERVICE},
                    condition=from_this_configuration_set,
                ),
            ),
            opts=child,
        )
        # After the policy: SES checks that it may publish when the destination is created.
        self.event_destination = aws.sesv2.ConfigurationSetEventDestination(
            f"{name}-events-destination",
            configuration_set_name=self.configuration_set.configuration_set_name,
            event_destination_name="sns-events",
            event_destination=aws.sesv2.ConfigurationSetEventDestinationEventDestinationArgs(
                enabled=True,
                matching_event_types=list(EVENT_TYPES),
                sns_destination=aws.sesv2.ConfigurationSetEventDestinationEventDestinationSnsDestinationArgs(
                    topic_arn=self.topic.arn
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.topic_policy]),
        )
        self.configuration_set_name = self.configuration_set.configuration_set_name
        self.configuration_set_arn = self.configuration_set.arn
        self.topic_arn = self.topic.arn
        self.register_outputs(
            {
                "configurationSetName": self.configuration_set.configuration_set_name,
                "eventsTopicArn": self.topic.arn,
            }
        )

    def identity_arn(self, identity: str) -> pulumi.Output[str]:
        """The ARN IAM checks for sends From this verified domain or address."""
        return pulumi.Output.concat(
            "arn:aws:ses:", self._region, ":", self._account_id, ":identity/", identity
        )

    def send_statements(self) -> list[dict[str, Any]]:
        """The grant to send through the configuration set From the configured identities only;
        none at all without identities."""
        if not self._identities:
            return []
        return [
            statement(
                "SendOutreachEmail",
                SEND_ACTIONS,
                [
                    *(self.identity_arn(identity) for identity in self._identities),
                    self.configuration_set.arn,
                ],
            )
        ]
