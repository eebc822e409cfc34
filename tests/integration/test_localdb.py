"""The embedded PostgreSQL: MICRO_AGENT_EMBEDDED_PG picks the major version the suite runs on."""

from __future__ import annotations

import os

import psycopg
import pytest

from devtools.localdb import embedded_version

pytestmark = pytest.mark.integration


@pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL", "").strip()),
    reason="DATABASE_URL is set: the suite runs on that server, not the embedded one",
)
def test_the_embedded_server_runs_the_major_version_the_variable_selects(
    pg_admin_url: str,
) -> None:
    # GIVEN the embedded server MICRO_AGENT_EMBEDDED_PG selects (18 when unset, 16 in tests-pg16)
    expected = int(embedded_version())

    # WHEN it is asked for its version
    with psycopg.connect(pg_admin_url) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int, version()"
        ).fetchone()

    # THEN its major version is the selected one
    assert row is not None
    number, banner = row
    assert number // 10000 == expected, banner
