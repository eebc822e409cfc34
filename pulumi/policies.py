"""IAM policy documents as plain data, serialised with Output.json_dumps (Outputs allowed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

# Key administration and use for the account root (so IAM can delegate), listed explicitly.
KEY_ADMIN_ACTIONS = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
]
# What a publisher to a topic encrypted with a key needs of the key.
KEY_USE_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]
# What the account keeps on a topic whose policy is ours (the defaults AWS would have given it).
TOPIC_OWNER_ACTIONS = [
    "sns:GetTopicAttributes",
    "sns:SetTopicAttributes",
    "sns:AddPermission",
    "sns:RemovePermission",
    "sns:DeleteTopic",
    "sns:Subscribe",
    "sns:ListSubscriptionsByTopic",
    "sns:Publish",
]


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[pulumi.Input[str]],
    *,
    effect: str = "Allow",
    principal: dict[str, Any] | None = None,
    condition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One statement; actions are always listed explicitly, never as ``*``."""
    document: dict[str, Any] = {
        "Sid": sid,
        "Effect": effect,
        "Action": list(actions),
        "Resource": list(resources),
    }
    if principal is not None:
        document["Principal"] = principal
    if condition is not None:
        document["Condition"] = condition
    return document


def document(*statements: dict[str, Any]) -> pulumi.Output[str]:
    """A policy document as a JSON string Output."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role(service: str, account_id: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
    """A trust policy for one AWS service, scoped to this account when given."""
    condition = {"StringEquals": {"aws:SourceAccount": account_id}} if account_id else None
    trust: dict[str, Any] = {
        "Sid": "AssumeByService",
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Principal": {"Service": service},
    }
    if condition:
        trust["Condition"] = condition
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [trust]})
