"""One database connection per Lambda container, opened lazily and reused while warm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from pgconn import Connector

T = TypeVar("T")


class ConnectionProvider:
    """Keeps one autocommit connection (callers open explicit transactions on it).

    The connector resolves credentials lazily and again after a failed connect, so a rotated
    secret or a failover costs one reconnect, not a recycled container.
    """

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.connector.connect(autocommit=True)
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
