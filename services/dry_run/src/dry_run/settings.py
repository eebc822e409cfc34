"""Runtime settings: every environment variable the dry-run function reads is named here.

``Settings.from_environ(os.environ)`` is the only place the function reads its environment
(once per container, in ``bootstrap``). The Pulumi program sets exactly ``DEPLOYED_ENVIRONMENT``
(an infra test compares the two).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from dry_run.exceptions import SettingsError
from pgconn import (
    DB_CONNECT_TIMEOUT_S,
    DB_HOST,
    DB_IAM_USER,
    DB_LOCK_TIMEOUT_MS,
    DB_NAME,
    DB_PORT,
    DB_STATEMENT_TIMEOUT_MS,
    DatabaseConfigError,
    DatabaseSettings,
)

# Live dispatch happens only when this is exactly the string "true".
DISPATCH_FLAG = "MICRO_AGENT_DISPARO_ENABLED"
# Comma-separated phones/emails; on dev and staging the live senders may contact only these.
SANDBOX_RECIPIENTS = "MICRO_AGENT_SANDBOX_RECIPIENTS"
# Live senders. The Graph API's base URL is not deployed (Meta's by default); tests and the
# local demo point it at a fake on localhost.
WHATSAPP_GRAPH_URL = "WHATSAPP_GRAPH_URL"
WHATSAPP_API_VERSION = "WHATSAPP_API_VERSION"
# Tenants' WhatsApp token secrets must have this ARN prefix (IAM allows only these, too).
TENANT_SECRETS_PREFIX = "TENANT_SECRETS_PREFIX"
# The one-click unsubscribe endpoint and the secret {"signingKey": ...} its tokens are signed
# with; without both, email and invitations are skipped `unsubscribe_not_configured`.
UNSUBSCRIBE_URL = "UNSUBSCRIBE_URL"
UNSUBSCRIBE_SECRET_ARN = "UNSUBSCRIBE_SECRET_ARN"  # noqa: S105 - a name, not a secret
# The stack's SES configuration set (a tenant_senders row may name its own).
SES_CONFIGURATION_SET = "SES_CONFIGURATION_SET"
# Provider calls one invocation makes at once.
SEND_CONCURRENCY = "SEND_CONCURRENCY"
# The sweeper: claims older than this many seconds (the dry-run function's timeout, plus a
# margin) can no longer be answered by their invocation and become `unknown`.
CLAIM_EXPIRY_S = "CLAIM_EXPIRY_S"
# Read by Powertools itself too (service name on every log line and metric, namespace, level).
POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"

# The names the deployed function is given. It connects with IAM database authentication as
# its own least-privilege user; DATABASE_URL (local work) and DB_SECRET_ARN (a secret of its
# own, for a database without IAM authentication) are supported but never deployed.
# What every function of this package is given: its database login and Powertools' names.
_COMMON_ENVIRONMENT = frozenset(
    {
        DB_IAM_USER,
        DB_HOST,
        DB_PORT,
        DB_NAME,
        DB_CONNECT_TIMEOUT_S,
        DB_STATEMENT_TIMEOUT_MS,
        DB_LOCK_TIMEOUT_MS,
        POWERTOOLS_SERVICE_NAME,
        POWERTOOLS_METRICS_NAMESPACE,
        POWERTOOLS_LOG_LEVEL,
    }
)
DEPLOYED_ENVIRONMENT = _COMMON_ENVIRONMENT | frozenset(
    {
        DISPATCH_FLAG,
        SANDBOX_RECIPIENTS,
        WHATSAPP_API_VERSION,
        TENANT_SECRETS_PREFIX,
        UNSUBSCRIBE_URL,
        UNSUBSCRIBE_SECRET_ARN,
        SES_CONFIGURATION_SET,
        SEND_CONCURRENCY,
    }
)
# The sweeper function's (same artifact, handler dry_run.sweeper.lambda_handler).
SWEEPER_DEPLOYED_ENVIRONMENT = _COMMON_ENVIRONMENT | {CLAIM_EXPIRY_S}
# The database user the migrations create for this function (IAM auth in AWS).
DATABASE_ROLE = "micro_agent_dry_run"

DEFAULT_SERVICE_NAME = "micro-agent-dry-run"
DEFAULT_METRICS_NAMESPACE = "MicroAgent"
DEFAULT_STATEMENT_TIMEOUT_MS = 10_000
DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
DEFAULT_SEND_CONCURRENCY = 12
MAX_SEND_CONCURRENCY = 32
DEFAULT_CLAIM_EXPIRY_S = 960


def dispatch_enabled(environ: Mapping[str, str]) -> bool:
    """Only the exact string ``true`` enables live dispatch; anything else is a dry run."""
    return environ.get(DISPATCH_FLAG) == "true"


def service_name(environ: Mapping[str, str]) -> str:
    """The service name on every log line and metric."""
    return environ.get(POWERTOOLS_SERVICE_NAME) or DEFAULT_SERVICE_NAME


def metrics_namespace(environ: Mapping[str, str]) -> str:
    """The CloudWatch namespace of the function's metrics."""
    return environ.get(POWERTOOLS_METRICS_NAMESPACE) or DEFAULT_METRICS_NAMESPACE


def sandbox_recipients(environ: Mapping[str, str]) -> frozenset[str]:
    """The sandbox allow-list in normal form: E.164 phones, lower-case emails (empty = anyone,
    which only prod may have). An entry that is neither raises SettingsError."""
    from dry_run.contacts import normalize_email, normalize_phone  # noqa: PLC0415

    raw = environ.get(SANDBOX_RECIPIENTS, "")
    normal = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        value = normalize_email(item) if "@" in item else normalize_phone(item)
        if value is None:
            raise SettingsError(
                f"{SANDBOX_RECIPIENTS}: expected comma-separated E.164 phones (+55…) and "
                f"emails, got an entry starting {item[:3]!r}…"
            )
        # DOMAIN.md: sandbox recipients compare as E.164 phones and lower-case emails
        # (email-validator keeps the local part's case).
        normal.add(value.lower())
    return frozenset(normal)


def _positive_int(environ: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise SettingsError(f"{name}: expected an integer from 1 to {high}, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class LiveSettings:
    """What live sending is configured with (read with the rest; used only by live runs)."""

    graph_url: str = DEFAULT_GRAPH_URL
    api_version: str = DEFAULT_API_VERSION
    secrets_prefix: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_secret_arn: str | None = None
    configuration_set: str | None = None
    concurrency: int = DEFAULT_SEND_CONCURRENCY

    @property
    def unsubscribe_ready(self) -> bool:
        """Whether emails can carry a working one-click unsubscribe link."""
        return bool(self.unsubscribe_url and self.unsubscribe_secret_arn)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LiveSettings:
        """Read the live settings; a bad one raises SettingsError naming the variable."""
        api_version = environ.get(WHATSAPP_API_VERSION, "").strip() or DEFAULT_API_VERSION
        if not re.fullmatch(r"v\d+\.\d+", api_version):
            raise SettingsError(
                f"{WHATSAPP_API_VERSION}: expected a Graph API version like v21.0, "
                f"got {api_version!r}"
            )
        unsubscribe_url = environ.get(UNSUBSCRIBE_URL, "").strip() or None
        if unsubscribe_url is not None:
            from dry_run.unsubscribe import unsubscribe_url as link  # noqa: PLC0415

            try:  # the very check the links are built with, at start-up
                link(unsubscribe_url, "probe")
            except ValueError:
                raise SettingsError(
                    f"{UNSUBSCRIBE_URL}: expected an https:// URL (the inbound function's; "
                    f"http only on localhost), got {unsubscribe_url[:60]!r}"
                ) from None
        return cls(
            graph_url=environ.get(WHATSAPP_GRAPH_URL, "").strip() or DEFAULT_GRAPH_URL,
            api_version=api_version,
            secrets_prefix=environ.get(TENANT_SECRETS_PREFIX, "").strip() or None,
            unsubscribe_url=unsubscribe_url,
            unsubscribe_secret_arn=environ.get(UNSUBSCRIBE_SECRET_ARN, "").strip() or None,
            configuration_set=environ.get(SES_CONFIGURATION_SET, "").strip() or None,
            concurrency=_positive_int(
                environ, SEND_CONCURRENCY, DEFAULT_SEND_CONCURRENCY, MAX_SEND_CONCURRENCY
            ),
        )


def claim_expiry_s(environ: Mapping[str, str]) -> int:
    """The sweeper's age, in seconds, past which a claim can no longer be answered."""
    return _positive_int(environ, CLAIM_EXPIRY_S, DEFAULT_CLAIM_EXPIRY_S, 86_400)


@dataclass(frozen=True)
class Settings:
    """Everything the function is configured with, read once per container."""

    dispatch_enabled: bool
    sandbox_recipients: frozenset[str]
    service_name: str
    metrics_namespace: str
    database: DatabaseSettings
    live: LiveSettings = LiveSettings()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check the settings; a bad one raises SettingsError naming the variable."""
        statement_timeout = environ.get(DB_STATEMENT_TIMEOUT_MS, "").strip()
        try:
            database = DatabaseSettings.from_environ(
                environ,
                statement_timeout_ms=None if statement_timeout else DEFAULT_STATEMENT_TIMEOUT_MS,
            )
        except DatabaseConfigError as exc:
            raise SettingsError(str(exc)) from exc
        return cls(
            dispatch_enabled=dispatch_enabled(environ),
            sandbox_recipients=sandbox_recipients(environ),
            service_name=service_name(environ),
            metrics_namespace=metrics_namespace(environ),
            database=database,
            live=LiveSettings.from_environ(environ),
        )
