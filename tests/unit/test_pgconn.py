"""Connection settings and targets: one-line errors, verified TLS, fresh credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgconn import (
    DatabaseConfigError,
    DatabaseSettings,
    rds_ca_bundle_path,
    resolve_conninfo,
    session_options,
)

SECRET = {"host": "db.internal", "port": 5432, "username": "app", "password": "s3cret"}


def test_a_url_is_used_as_given_without_tls_rewriting() -> None:
    settings = DatabaseSettings.from_environ({"DATABASE_URL": "postgresql://u@localhost/x"})

    assert resolve_conninfo(settings) == "postgresql://u@localhost/x"


def test_iam_authentication_signs_a_token_per_resolution_and_verifies_tls() -> None:
    settings = DatabaseSettings.from_environ(
        {"DB_IAM_USER": "micro_agent_dry_run", "DB_HOST": "c.rds.amazonaws.com", "DB_NAME": "agent"}
    )
    tokens = iter(["token-1", "token-2"])

    first = conninfo_to_dict(resolve_conninfo(settings, token_signer=lambda _: next(tokens)))
    second = conninfo_to_dict(resolve_conninfo(settings, token_signer=lambda _: next(tokens)))

    assert (first["user"], first["password"], second["password"]) == (
        "micro_agent_dry_run",
        "token-1",
        "token-2",
    )
    assert (first["host"], first["dbname"], first["port"]) == (
        "c.rds.amazonaws.com",
        "agent",
        "5432",
    )
    assert first["sslmode"] == "verify-full"
    assert first["sslrootcert"] == rds_ca_bundle_path()
    assert Path(rds_ca_bundle_path()).is_file()


def test_a_secret_target_fills_host_and_name_and_verifies_tls() -> None:
    settings = DatabaseSettings.from_environ(
        {"DB_SECRET_ARN": "arn:aws:secretsmanager:x:1:secret:db", "DB_NAME": "agent"}
    )

    params = conninfo_to_dict(resolve_conninfo(settings, secret_fetcher=lambda _: SECRET))

    assert (params["host"], params["user"], params["password"], params["dbname"]) == (
        "db.internal",
        "app",
        "s3cret",
        "agent",
    )
    assert params["sslmode"] == "verify-full"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no database configured: set DATABASE_URL"),
        ({"DB_IAM_USER": "u", "DB_NAME": "x"}, "DB_IAM_USER is set but DB_HOST is not"),
        ({"DATABASE_URL": "postgresql://x", "DB_PORT": "five"}, "DB_PORT: expected a positive"),
        ({"DATABASE_URL": "postgresql://x", "DB_LOCK_TIMEOUT_MS": "0"}, "DB_LOCK_TIMEOUT_MS:"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(DatabaseConfigError) as raised:
        DatabaseSettings.from_environ(environ)

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_every_session_carries_its_timeouts_in_utc() -> None:
    settings = DatabaseSettings(statement_timeout_ms=10_000, lock_timeout_ms=3_000)

    options = session_options(settings)

    assert options.split(" -c ") == [
        "-c statement_timeout=10000",
        "lock_timeout=3000",
        "idle_in_transaction_session_timeout=30000",
        "timezone=UTC",
    ]


def test_a_timeout_given_in_code_overrides_its_variable_and_zero_means_none() -> None:
    environ = {"DATABASE_URL": "postgresql://x", "DB_STATEMENT_TIMEOUT_MS": "10"}

    runner = DatabaseSettings.from_environ(environ, statement_timeout_ms=0, lock_timeout_ms=0)
    function = DatabaseSettings.from_environ(environ)

    assert (runner.statement_timeout_ms, runner.lock_timeout_ms) == (0, 0)
    assert (function.statement_timeout_ms, function.lock_timeout_ms) == (10, 5_000)
    assert "-c statement_timeout=0 -c lock_timeout=0" in session_options(runner)


def test_the_functions_settings_name_a_bad_variable_in_one_line() -> None:
    from dry_run.exceptions import SettingsError
    from dry_run.settings import Settings

    with pytest.raises(SettingsError) as raised:
        Settings.from_environ({"DATABASE_URL": "postgresql://x", "DB_CONNECT_TIMEOUT_S": "-1"})

    assert str(raised.value) == "DB_CONNECT_TIMEOUT_S: expected a positive integer, got '-1'"
