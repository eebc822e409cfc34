"""Shared fixtures: a real PostgreSQL (embedded unless DATABASE_URL is set) and fake AWS.

The embedded server is PostgreSQL 18, or 16 with ``MICRO_AGENT_EMBEDDED_PG=16`` (``nox -s
tests-pg16``).

The suite only ever touches databases it created itself (``test_<hex>``), and drops them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest
from psycopg import sql

from devtools.localdb import EmbeddedServerError, embedded_server, with_database
from migrate.runner import Runner
from tests.support import MIGRATIONS_DIR


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL on a server where the suite may create databases."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        yield configured
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(embedded_server())
        except EmbeddedServerError as exc:  # a bad MICRO_AGENT_EMBEDDED_PG: say so once
            pytest.exit(str(exc), returncode=2)
        yield url


def _create_database(admin_url: str, template: str | None = None) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(query)
    return name


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def empty_db(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database; its URL."""
    name = _create_database(pg_admin_url)
    yield with_database(pg_admin_url, name)
    _drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def migrated_template(pg_admin_url: str) -> Iterator[str]:
    """A database with every migration applied, used as a template (copying is fast)."""
    name = _create_database(pg_admin_url)
    with psycopg.connect(with_database(pg_admin_url, name), autocommit=True) as conn:
        Runner(conn, MIGRATIONS_DIR).apply()
        # The migrations partition the ledger around today; the tests decide at fixed dates
        # (2026 and 2027), which must have their partitions whatever day the suite runs.
        conn.execute(
            "SELECT dry_run_log_add_partition(month::date), live_log_add_partition(month::date)"
            " FROM generate_series("
            "date '2026-01-01', date '2027-12-01', interval '1 month') AS month"
        )
    yield name
    _drop_database(pg_admin_url, name)


@pytest.fixture
def migrated_db(pg_admin_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh database with the schema applied; its URL."""
    name = _create_database(pg_admin_url, template=migrated_template)
    yield with_database(pg_admin_url, name)
    _drop_database(pg_admin_url, name)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so that boto3 under moto never reaches AWS."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
