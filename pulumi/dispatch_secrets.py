"""The secrets live dispatch reads, and the only grant to read them.

Two kinds, both under ``<project>/<stack>/`` in Secrets Manager:

- the tenants' WhatsApp tokens, ``<project>/<stack>/tenants/…`` (``{"accessToken": "…"}``),
  created out of band when a tenant is onboarded; their ARNs live in ``tenant_senders``, and the
  function refuses an ARN outside ``TENANT_SECRETS_PREFIX``;
- the unsubscribe signing key, ``<project>/<stack>/unsubscribe`` (``{"signingKey": "…"}``),
  created here without a value, so that no secret value ever passes through the program or
  its state. Put it once per stack::

      aws secretsmanager put-secret-value --secret-id micro-agent/<stack>/unsubscribe \\
        --secret-string "{\\"signingKey\\": \\"$(openssl rand -hex 32)\\"}"

Both are encrypted with the AWS-managed ``aws/secretsmanager`` key: the program's customer keys
each encrypt one SNS topic and name only its publishers, and with the managed key the permission
to read a secret is the ``secretsmanager:GetSecretValue`` grant alone, with no key policy to keep
in step. A
tenant secret encrypted with a customer key of its own would need ``kms:Decrypt`` on that key
(with a ``kms:ViaService`` condition) added to the reader's grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi_aws as aws
from policies import statement

import pulumi


@dataclass(frozen=True)
class DispatchSecretsArgs:
    """Where the secrets live: ``<project>/<stack>`` in this account and region."""

    path: str
    region: pulumi.Input[str]
    account_id: pulumi.Input[str]
    tags: dict[str, str]


class DispatchSecrets(pulumi.ComponentResource):
    """The unsubscribe signing key's secret and the tenants' secrets prefix."""

    def __init__(
        self, name: str, args: DispatchSecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("micro-agent:dispatch_secrets:DispatchSecrets", name, None, opts)
        self.unsubscribe = aws.secretsmanager.Secret(
            f"{name}-unsubscribe",
            name=f"{args.path}/unsubscribe",
            description=(
                'Signing key of the one-click unsubscribe links, {"signingKey": "..."}; '
                "its value is put out of band"
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The ARN every tenant secret of this stack starts with (the random suffix follows).
        self.tenant_secrets_prefix = pulumi.Output.concat(
            "arn:aws:secretsmanager:",
            args.region,
            ":",
            args.account_id,
            ":secret:",
            args.path,
            "/tenants/",
        )
        self.unsubscribe_secret_arn = self.unsubscribe.arn
        self.register_outputs(
            {
                "unsubscribeSecretArn": self.unsubscribe.arn,
                "tenantSecretsPrefix": self.tenant_secrets_prefix,
            }
        )

    def read_statement(self) -> dict[str, Any]:
        """The grant to read the tenants' secrets and the unsubscribe key, and nothing else."""
        return statement(
            "ReadTenantAndUnsubscribeSecrets",
            ["secretsmanager:GetSecretValue"],
            [pulumi.Output.concat(self.tenant_secrets_prefix, "*"), self.unsubscribe.arn],
        )
