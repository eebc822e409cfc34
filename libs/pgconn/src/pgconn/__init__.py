"""PostgreSQL connection settings shared by the micro-agent Lambdas.

A connection target comes from ``DATABASE_URL`` (local work, CI, a developer's own server) or
from ``DB_SECRET_ARN``, a Secrets Manager secret in the RDS format (Aurora in AWS). Connections
always carry a connect timeout, a statement timeout and ``prepare_threshold=None`` so that they
work behind RDS Proxy, which does not pin server-side prepared statements.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# The environment variable names this library reads; the Pulumi program sets DB_SECRET_ARN.
DATABASE_URL = "DATABASE_URL"
DB_SECRET_ARN = "DB_SECRET_ARN"  # noqa: S105 - the variable name, not a secret
# Fill in what a secret lacks: RDS-managed master secrets hold only username and password.
DB_HOST = "DB_HOST"
DB_NAME = "DB_NAME"

DEFAULT_CONNECT_TIMEOUT_S = 5
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000

# The password may be absent: IAM-authenticated or trust-authenticated targets have none.
_REQUIRED_SECRET_FIELDS = ("host", "username")


class DatabaseConfigError(Exception):
    """The database target is not configured, or its secret is malformed."""


def conninfo_from_secret(
    secret: Mapping[str, Any], defaults: Mapping[str, str] | None = None
) -> str:
    """Build a libpq connection string from an RDS-format secret (host/port/username/...).

    ``defaults`` supplies ``host`` and ``dbname`` when the secret has none.
    """
    secret = {**{k: v for k, v in (defaults or {}).items() if v}, **secret}
    missing = [name for name in _REQUIRED_SECRET_FIELDS if not secret.get(name)]
    if missing:
        raise DatabaseConfigError(
            f"database secret is missing field(s) {', '.join(missing)}: expected the RDS format "
            "with host, port, username, password and dbname"
        )
    params = {
        "host": str(secret["host"]),
        "port": str(secret.get("port") or 5432),
        "user": str(secret["username"]),
        "dbname": str(secret.get("dbname") or "postgres"),
    }
    if secret.get("password"):
        params["password"] = str(secret["password"])
    return make_conninfo(**params)


def fetch_secret(arn: str, client: SecretsManagerClient | None = None) -> dict[str, Any]:
    """Fetch and decode a JSON secret from Secrets Manager."""
    if client is None:
        import boto3  # noqa: PLC0415 - imported lazily: boto3 costs ~150 ms of cold start

        client = boto3.client("secretsmanager")
    response = client.get_secret_value(SecretId=arn)
    try:
        value = json.loads(response["SecretString"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise DatabaseConfigError(f"secret {arn} is not a JSON SecretString") from exc
    if not isinstance(value, dict):
        raise DatabaseConfigError(f"secret {arn} holds JSON that is not an object")
    return value


def resolve_conninfo(environ: Mapping[str, str], client: SecretsManagerClient | None = None) -> str:
    """Return the connection string: DATABASE_URL when set, else the secret at DB_SECRET_ARN."""
    url = environ.get(DATABASE_URL, "").strip()
    if url:
        return url
    arn = environ.get(DB_SECRET_ARN, "").strip()
    if arn:
        defaults = {"host": environ.get(DB_HOST, ""), "dbname": environ.get(DB_NAME, "")}
        return conninfo_from_secret(fetch_secret(arn, client), defaults)
    raise DatabaseConfigError(
        f"no database configured: set {DATABASE_URL} (a postgresql:// URL) "
        f"or {DB_SECRET_ARN} (the ARN of an RDS-format secret)"
    )


def describe(conninfo: str) -> str:
    """Describe a target as ``host=… port=… dbname=… user=…``, never with its password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparseable connection string"
    host = str(params.get("host") or "localhost")
    parts = [f"host={host}"]
    parts += [f"{key}={params[key]}" for key in ("port", "dbname", "user") if params.get(key)]
    return " ".join(parts)


def connect(
    conninfo: str,
    *,
    application_name: str,
    autocommit: bool = False,
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
) -> psycopg.Connection[Any]:
    """Open a connection with timeouts set, UTC, and server-side prepared statements off."""
    return psycopg.connect(
        conninfo,
        autocommit=autocommit,
        connect_timeout=connect_timeout_s,
        application_name=application_name,
        # UTC sessions: timestamps read back compare and serialise identically everywhere.
        options=f"-c statement_timeout={int(statement_timeout_ms)} -c timezone=UTC",
        prepare_threshold=None,
    )


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (libpq messages span lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
