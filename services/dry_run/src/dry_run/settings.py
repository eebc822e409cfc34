"""Runtime settings: every environment variable the dry-run function reads is named here.

The Pulumi program sets exactly these (an infra test compares the two lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pgconn import DB_HOST, DB_NAME, DB_SECRET_ARN

# Live dispatch happens only when this is exactly the string "true".
DISPATCH_FLAG = "MICRO_AGENT_DISPARO_ENABLED"
# Comma-separated phones/emails; on dev and staging the live senders may contact only these.
SANDBOX_RECIPIENTS = "MICRO_AGENT_SANDBOX_RECIPIENTS"
DB_CONNECT_TIMEOUT_S = "DB_CONNECT_TIMEOUT_S"
DB_STATEMENT_TIMEOUT_MS = "DB_STATEMENT_TIMEOUT_MS"
# Read by Powertools itself (service name on every log line and metric, metrics namespace).
POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"

# The names the deployed function reads (DATABASE_URL is for local work, never deployed).
DEPLOYED_ENVIRONMENT = frozenset(
    {
        DISPATCH_FLAG,
        SANDBOX_RECIPIENTS,
        DB_SECRET_ARN,
        DB_HOST,
        DB_NAME,
        DB_CONNECT_TIMEOUT_S,
        DB_STATEMENT_TIMEOUT_MS,
        POWERTOOLS_SERVICE_NAME,
        POWERTOOLS_METRICS_NAMESPACE,
        POWERTOOLS_LOG_LEVEL,
    }
)

DEFAULT_SERVICE_NAME = "micro-agent-dry-run"
DEFAULT_METRICS_NAMESPACE = "MicroAgent"


class SettingsError(ValueError):
    """A setting is present but not usable."""


def dispatch_enabled(environ: Mapping[str, str]) -> bool:
    """Only the exact string ``true`` enables live dispatch; anything else is a dry run."""
    return environ.get(DISPATCH_FLAG) == "true"


def sandbox_recipients(environ: Mapping[str, str]) -> frozenset[str]:
    """The sandbox allow-list (empty = no restriction, which only prod may have)."""
    raw = environ.get(SANDBOX_RECIPIENTS, "")
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SettingsError(f"{name}: expected a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True)
class DatabaseSettings:
    """How the function connects; the target itself comes from pgconn.resolve_conninfo."""

    connect_timeout_s: int
    statement_timeout_ms: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DatabaseSettings:
        return cls(
            connect_timeout_s=_positive_int(environ, DB_CONNECT_TIMEOUT_S, 5),
            statement_timeout_ms=_positive_int(environ, DB_STATEMENT_TIMEOUT_MS, 10_000),
        )
