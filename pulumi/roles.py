"""One execution role per function; its permissions are attached by the function component."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws
from policies import assume_role

import pulumi


@dataclass(frozen=True)
class FunctionRoleArgs:
    """Settings of a Lambda execution role."""

    description: str
    tags: dict[str, str]


class FunctionRole(pulumi.ComponentResource):
    """An IAM role only Lambda can assume, with no permissions of its own yet.

    Created before the alerts key so that the key policy can name it.
    """

    def __init__(
        self, name: str, args: FunctionRoleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:roles:FunctionRole", name, None, opts)
        self.role = aws.iam.Role(
            f"{name}-role",
            description=args.description,
            assume_role_policy=assume_role("lambda.amazonaws.com"),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.arn = self.role.arn
        self.register_outputs({"roleArn": self.role.arn})
