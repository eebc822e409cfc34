"""One database connection per Lambda container, opened lazily and reused while warm."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg

from dry_run.settings import DatabaseSettings
from pgconn import connect, resolve_conninfo

T = TypeVar("T")
APPLICATION_NAME = "micro-agent-dry-run"


class ConnectionProvider:
    """Resolves the target once (the secret is fetched once per container) and keeps one
    autocommit connection; callers open explicit transactions on it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._conninfo: str | None = None
        self._settings: DatabaseSettings | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conninfo is None:
                self._settings = DatabaseSettings.from_environ(self._environ)
                self._conninfo = resolve_conninfo(self._environ)
            assert self._settings is not None
            self._conn = connect(
                self._conninfo,
                application_name=APPLICATION_NAME,
                autocommit=True,
                connect_timeout_s=self._settings.connect_timeout_s,
                statement_timeout_ms=self._settings.statement_timeout_ms,
            )
        return self._conn

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work``; if the server had dropped the cached connection, reconnect once.

        Retrying is safe: ``work`` is one transaction that either committed nothing or, if the
        drop came during COMMIT, is replayed by its runId without writing again.
        """
        conn = self._connection()
        try:
            return work(conn)
        except psycopg.OperationalError:
            if not conn.broken:
                raise
        self.close()
        return work(self._connection())

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
