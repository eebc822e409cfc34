"""PostgreSQL connections for the micro-agent Lambdas: one target, hardened, rotation-proof.

A target is, in order of precedence:

- ``DATABASE_URL``: a libpq URL, used as given (local work, CI, a developer's own server);
- ``DB_IAM_USER``: IAM database authentication as that user, on ``DB_HOST``/``DB_PORT``/
  ``DB_NAME``; a fresh token (15 minutes) is signed for every connect;
- ``DB_SECRET_ARN``: a Secrets Manager secret in the RDS format (``host``, ``port``,
  ``username``, ``password``, ``dbname``); ``DB_HOST``/``DB_NAME`` fill what it lacks.

Through IAM or a secret the connection is TLS with ``sslmode=verify-full`` against the Amazon
RDS CA bundle shipped inside this package. Every connection sets a connect timeout, a statement
timeout, a lock timeout, an idle-in-transaction timeout, TCP keepalives, UTC, and
``prepare_threshold=None`` (RDS Proxy does not pin server-side prepared statements).

When a connect fails, the credentials may be stale (a rotated secret, an expired token, a
failover to a new writer): :class:`Connector` resolves them again once and retries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# The environment variable names this library reads; the Pulumi program sets them.
DATABASE_URL = "DATABASE_URL"
DB_SECRET_ARN = "DB_SECRET_ARN"  # noqa: S105 - the variable name, not a secret
DB_IAM_USER = "DB_IAM_USER"
DB_HOST = "DB_HOST"
DB_PORT = "DB_PORT"
DB_NAME = "DB_NAME"
DB_CONNECT_TIMEOUT_S = "DB_CONNECT_TIMEOUT_S"
DB_STATEMENT_TIMEOUT_MS = "DB_STATEMENT_TIMEOUT_MS"
DB_LOCK_TIMEOUT_MS = "DB_LOCK_TIMEOUT_MS"
# Lambda's own: the region IAM tokens are signed for.
AWS_REGION = "AWS_REGION"

DEFAULT_CONNECT_TIMEOUT_S = 5
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
DEFAULT_LOCK_TIMEOUT_MS = 5_000
# A Lambda frozen or killed inside a transaction must not hold its locks for long.
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
# Notice a dead peer (a failed-over writer, a dropped NAT entry) within about a minute.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
RDS_CA_BUNDLE = "rds-global-bundle.pem"

# The password may be absent: IAM-authenticated or trust-authenticated targets have none.
_REQUIRED_SECRET_FIELDS = ("host", "username")


class DatabaseConfigError(Exception):
    """The database target is not configured, or its secret is malformed."""


def rds_ca_bundle_path() -> str:
    """The file path of the Amazon RDS CA bundle shipped in this package."""
    return str(files("pgconn") / RDS_CA_BUNDLE)


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DatabaseConfigError(f"{name}: expected a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True)
class DatabaseSettings:
    """Where and how to connect, read once from the environment."""

    url: str = ""
    iam_user: str = ""
    secret_arn: str = ""
    host: str = ""
    port: int = 5432
    name: str = ""
    region: str = ""
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        *,
        statement_timeout_ms: int | None = None,
        lock_timeout_ms: int | None = None,
    ) -> DatabaseSettings:
        """Read the settings; a timeout given here overrides its variable (0: none at all)."""
        settings = cls(
            url=environ.get(DATABASE_URL, "").strip(),
            iam_user=environ.get(DB_IAM_USER, "").strip(),
            secret_arn=environ.get(DB_SECRET_ARN, "").strip(),
            host=environ.get(DB_HOST, "").strip(),
            port=_positive_int(environ, DB_PORT, 5432),
            name=environ.get(DB_NAME, "").strip(),
            region=environ.get(AWS_REGION, "").strip(),
            connect_timeout_s=_positive_int(
                environ, DB_CONNECT_TIMEOUT_S, DEFAULT_CONNECT_TIMEOUT_S
            ),
            statement_timeout_ms=(
                _positive_int(environ, DB_STATEMENT_TIMEOUT_MS, DEFAULT_STATEMENT_TIMEOUT_MS)
                if statement_timeout_ms is None
                else statement_timeout_ms
            ),
            lock_timeout_ms=(
                _positive_int(environ, DB_LOCK_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS)
                if lock_timeout_ms is None
                else lock_timeout_ms
            ),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Fail with one line when no usable target is configured."""
        if self.url or self.secret_arn:
            return
        if self.iam_user:
            missing = [
                name for name, value in ((DB_HOST, self.host), (DB_NAME, self.name)) if not value
            ]
            if missing:
                raise DatabaseConfigError(
                    f"{DB_IAM_USER} is set but {', '.join(missing)} is not: IAM authentication "
                    "needs the cluster endpoint and the database name"
                )
            return
        raise DatabaseConfigError(
            f"no database configured: set {DATABASE_URL} (a postgresql:// URL), {DB_IAM_USER} "
            f"(with {DB_HOST} and {DB_NAME}) or {DB_SECRET_ARN} (the ARN of an RDS-format secret)"
        )


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


def iam_auth_token(settings: DatabaseSettings) -> str:
    """A fresh IAM database authentication token (signed locally, valid 15 minutes)."""
    import boto3  # noqa: PLC0415 - imported lazily, as above

    client = boto3.client("rds", region_name=settings.region or None)
    return str(
        client.generate_db_auth_token(
            DBHostname=settings.host,
            Port=settings.port,
            DBUsername=settings.iam_user,
            Region=settings.region or None,
        )
    )


def _verified_tls() -> dict[str, str]:
    return {"sslmode": "verify-full", "sslrootcert": rds_ca_bundle_path()}


def resolve_conninfo(
    settings: DatabaseSettings,
    *,
    secret_fetcher: Callable[[str], Mapping[str, Any]] = fetch_secret,
    token_signer: Callable[[DatabaseSettings], str] = iam_auth_token,
) -> str:
    """The connection string for the configured target, with fresh credentials."""
    if settings.url:
        return settings.url
    if settings.iam_user:
        params = {
            "host": settings.host,
            "port": str(settings.port),
            "dbname": settings.name,
            "user": settings.iam_user,
            "password": token_signer(settings),
        }
        return make_conninfo(**params, **_verified_tls())
    if settings.secret_arn:
        defaults = {"host": settings.host, "dbname": settings.name}
        base = conninfo_from_secret(secret_fetcher(settings.secret_arn), defaults)
        return make_conninfo(base, **_verified_tls())
    settings.check()
    raise AssertionError("unreachable: check() raises")  # pragma: no cover


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


def session_options(settings: DatabaseSettings) -> str:
    """The ``options`` every session starts with: its timeouts, in UTC."""
    return (
        f"-c statement_timeout={int(settings.statement_timeout_ms)} "
        f"-c lock_timeout={int(settings.lock_timeout_ms)} "
        f"-c idle_in_transaction_session_timeout={int(settings.idle_in_transaction_timeout_ms)} "
        "-c timezone=UTC"
    )


def connect(
    conninfo: str,
    *,
    application_name: str,
    autocommit: bool = False,
    settings: DatabaseSettings | None = None,
) -> psycopg.Connection[Any]:
    """Open a connection with timeouts, keepalives, UTC, and server-side prepares off."""
    settings = settings or DatabaseSettings()
    return psycopg.connect(
        make_conninfo(conninfo, **KEEPALIVES),
        autocommit=autocommit,
        connect_timeout=settings.connect_timeout_s,
        application_name=application_name,
        # UTC sessions: timestamps read back compare and serialise identically everywhere.
        options=session_options(settings),
        prepare_threshold=None,
    )


class Connector:
    """Opens connections to one target, resolving credentials lazily and again when stale.

    The credentials (a secret's password, an IAM token) are cached between connects. A connect
    that fails may mean they went stale (RDS rotates managed secrets every 7 days; a token
    lives 15 minutes; a failover moves the writer), so the connector resolves them afresh once
    and retries; a second failure is the real answer and propagates.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        application_name: str,
        secret_fetcher: Callable[[str], Mapping[str, Any]] = fetch_secret,
        token_signer: Callable[[DatabaseSettings], str] = iam_auth_token,
    ) -> None:
        self.settings = settings
        self._application_name = application_name
        self._secret_fetcher = secret_fetcher
        self._token_signer = token_signer
        self._conninfo: str | None = None

    @property
    def refreshable(self) -> bool:
        """Whether credentials can change under us (anything but a fixed URL)."""
        return not self.settings.url

    def _resolve(self) -> str:
        return resolve_conninfo(
            self.settings, secret_fetcher=self._secret_fetcher, token_signer=self._token_signer
        )

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        """A new connection; after a failed attempt with cached credentials, one fresh try."""
        cached = self._conninfo is not None
        # IAM tokens expire: sign one for every connect rather than cache it.
        if self._conninfo is None or self.settings.iam_user:
            self._conninfo = self._resolve()
        try:
            return self._open(self._conninfo, autocommit)
        except psycopg.OperationalError:
            if not (cached and self.refreshable):
                raise
        self._conninfo = self._resolve()
        return self._open(self._conninfo, autocommit)

    def describe(self) -> str:
        """The target without its credentials."""
        if self._conninfo is not None:
            return describe(self._conninfo)
        if self.settings.url:
            return describe(self.settings.url)
        return f"host={self.settings.host or '?'} dbname={self.settings.name or '?'}"

    def _open(self, conninfo: str, autocommit: bool) -> psycopg.Connection[Any]:
        return connect(
            conninfo,
            application_name=self._application_name,
            autocommit=autocommit,
            settings=self.settings,
        )


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (libpq messages span lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
