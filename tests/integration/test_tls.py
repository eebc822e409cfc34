"""Through a secret, the function's connection really verifies the server: verify-full.

A throwaway PostgreSQL cluster (``tests/tls_server.py``) accepts only TLS on 127.0.0.1 and
serves certificates of a CA the tests make; the function connects to it as it does in Lambda,
through ``Connector`` and an RDS-format secret naming ``localhost``. libpq, not the tests,
decides whether the server is trusted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgconn
from pgconn import Connector, DatabaseSettings, rds_ca_bundle_path, resolve_conninfo
from tests.tls_server import SUPERUSER, SUPERUSER_PASSWORD, TlsPostgres, find_openssl_postgres
from tests.tls_server import tls_postgres as start_tls_postgres

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET_ARN = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:tls-test-AbCdEf"
# The host name the secret gives, and one the server's certificate may name instead.
SECRET_HOST = "localhost"
OTHER_HOST = "db.other.example"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsPostgres]:
    """A cluster speaking TLS on 127.0.0.1 with certificates for SECRET_HOST and OTHER_HOST."""
    bindir = find_openssl_postgres()
    if bindir is None and os.environ.get("CI") == "true":
        pytest.fail(
            "no PostgreSQL built with OpenSSL: .ci/run installs Debian's postgresql package, "
            "which should have provided one"
        )
    if bindir is None:
        # A developer's machine without it; CI always has it (see .ci/run).
        pytest.skip(
            "no PostgreSQL built with OpenSSL (the embedded wheels are built without it): "
            "install one, e.g. Debian's postgresql package"
        )
    with start_tls_postgres(bindir, hosts=(SECRET_HOST, OTHER_HOST)) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_libpq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq reads PG* variables (PGHOSTADDR, PGSSLCERT, ...): none may steer these tests."""
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)


def secret_connector(server: TlsPostgres) -> Connector:
    """The function's Connector, its target an RDS-format secret that names the server."""
    secret = {
        "host": SECRET_HOST,
        "port": server.port,
        "username": SUPERUSER,
        "password": SUPERUSER_PASSWORD,
        "dbname": "postgres",
    }

    def fetch(arn: str) -> Mapping[str, Any]:
        assert arn == SECRET_ARN
        return secret

    settings = DatabaseSettings(secret_arn=SECRET_ARN, connect_timeout_s=5)
    return Connector(settings, application_name="test-tls", secret_fetcher=fetch)


def trust_test_ca(monkeypatch: pytest.MonkeyPatch, server: TlsPostgres) -> None:
    """Make the tests' CA the bundle the function verifies against, as the RDS one is live."""
    monkeypatch.setattr(pgconn, "rds_ca_bundle_path", lambda: str(server.ca_file))


def test_a_server_whose_ca_is_not_in_the_rds_bundle_is_refused(tls_server: TlsPostgres) -> None:
    # GIVEN a TLS server whose certificate names localhost but comes from a CA outside the RDS
    # bundle, and the real bundle shipped in pgconn
    tls_server.serve(SECRET_HOST)
    assert os.path.isfile(rds_ca_bundle_path()), "the RDS CA bundle must ship in pgconn"
    connector = secret_connector(tls_server)

    # WHEN the function connects to it through its secret
    with pytest.raises(psycopg.OperationalError) as refused:
        connector.connect()

    # THEN libpq refuses the server: its certificate failed verification
    assert "certificate verify failed" in str(refused.value), tls_server.log_tail()


def test_a_server_signed_by_the_trusted_ca_is_reached_over_tls(
    tls_server: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the same server, with the function's CA bundle replaced by the tests' CA
    tls_server.serve(SECRET_HOST)
    trust_test_ca(monkeypatch, tls_server)
    connector = secret_connector(tls_server)

    # WHEN the function connects through its secret and asks how it is connected
    with connector.connect() as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()

    # THEN the session is encrypted
    assert row == (True,)


def test_a_certificate_for_another_host_name_is_refused_even_from_a_trusted_ca(
    tls_server: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the tests' CA trusted, and the server presenting a certificate it issued for
    # another host name than the secret's
    tls_server.serve(OTHER_HOST)
    trust_test_ca(monkeypatch, tls_server)
    connector = secret_connector(tls_server)

    # WHEN the function connects through its secret
    with pytest.raises(psycopg.OperationalError) as refused:
        connector.connect()

    # THEN libpq refuses the host name (verify-full; verify-ca would have let it through)
    message = str(refused.value)
    assert f'"{OTHER_HOST}" does not match host name "{SECRET_HOST}"' in message, message


def test_a_database_url_is_used_as_given_without_tls_settings_added() -> None:
    # GIVEN a plain DATABASE_URL target
    url = "postgresql://app@127.0.0.1:5432/app?connect_timeout=3"
    settings = DatabaseSettings(url=url)

    def no_secret(arn: str) -> Mapping[str, Any]:
        raise AssertionError(f"a URL target must not fetch a secret ({arn})")

    # WHEN the function resolves its connection string
    conninfo = resolve_conninfo(settings, secret_fetcher=no_secret)

    # THEN it is the URL, unchanged: no sslmode or sslrootcert is injected
    assert conninfo == url
    assert not {"sslmode", "sslrootcert"} & conninfo_to_dict(conninfo).keys()
