"""Runtime settings: every environment variable the dry-run function reads is named here.

``Settings.from_environ(os.environ)`` is the only place the function reads its environment
(once per container, in ``bootstrap``). The Pulumi program sets exactly ``DEPLOYED_ENVIRONMENT``
(an infra test compares the two).
"""

from __future__ import annotations

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
# Read by Powertools itself too (service name on every log line and metric, namespace, level).
POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"

# The names the deployed function is given. It connects with IAM database authentication as
# its own least-privilege user; DATABASE_URL (local work) and DB_SECRET_ARN (a secret of its
# own, for a database without IAM authentication) are supported but never deployed.
DEPLOYED_ENVIRONMENT = frozenset(
    {
        DISPATCH_FLAG,
        SANDBOX_RECIPIENTS,
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
# The database user the migrations create for this function (IAM auth in AWS).
DATABASE_ROLE = "micro_agent_dry_run"

DEFAULT_SERVICE_NAME = "micro-agent-dry-run"
DEFAULT_METRICS_NAMESPACE = "MicroAgent"
DEFAULT_STATEMENT_TIMEOUT_MS = 10_000


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
    """The sandbox allow-list (empty = no restriction, which only prod may have)."""
    raw = environ.get(SANDBOX_RECIPIENTS, "")
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the function is configured with, read once per container."""

    dispatch_enabled: bool
    sandbox_recipients: frozenset[str]
    service_name: str
    metrics_namespace: str
    database: DatabaseSettings

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
        )
