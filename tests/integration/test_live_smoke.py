"""A live run end to end against the fake Graph API: claim, send, record."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from devtools.fake_graph import FakeGraph, running_fake_graph
from dry_run.live import LiveRuntime
from dry_run.senders.whatsapp import TokenCache, WhatsAppSender
from dry_run.service import run_invocation
from tests.support import insert_leads, insert_tenant

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TOKEN = "fake-token"
NUMBER = "106540352242922"
SECRET = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/test/tenants/t-1"


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with running_fake_graph(token=TOKEN) as fake:
        yield fake


def runtime(graph: FakeGraph) -> LiveRuntime:
    sender = WhatsAppSender(
        graph.url, "v21.0", TokenCache(lambda arn, client: {"accessToken": TOKEN})
    )
    return LiveRuntime(senders={"whatsapp": sender}, concurrency=4)


def test_a_live_run_sends_each_claim_once_and_records_it(
    migrated_db: str, graph: FakeGraph
) -> None:
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        conn.execute("UPDATE tenants SET dispatch_mode = 'live'")
        conn.execute(
            "INSERT INTO tenant_senders (tenant_id, channel, sender, secret_arn) "
            "VALUES ('t-1', 'whatsapp', %s, %s)",
            (NUMBER, SECRET),
        )
        insert_leads(conn, "t-1", 3)
    live = runtime(graph)
    try:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            result, again = (
                run_invocation(
                    conn,
                    tenant_id="t-1",
                    batch_size=10,
                    run_id="r-1",
                    clock=lambda: NOON,
                    dispatch_enabled=True,
                    live_runtime=lambda: live,
                )
                for _ in range(2)
            )
            rows: list[Any] = conn.execute(
                "SELECT status, provider_message_id IS NOT NULL FROM dispatches"
            ).fetchall()
            logged = conn.execute("SELECT action FROM live_log").fetchall()
    finally:
        live.close()
    assert [d.action for d in result.decisions] == ["sent"] * 3
    assert len(graph.requests) == 3
    assert rows == [("sent", True)] * 3
    assert logged == [("sent",)] * 3
    assert again.replayed
    assert [d.action for d in again.decisions] == ["sent"] * 3
    assert len(graph.requests) == 3
    response = result.to_response()
    assert response["dryRun"] is False
    assert response["summary"]["sent"] == 3
    assert all(d["providerMessageId"] for d in response["decisions"])


# The probe runs in a fresh interpreter so that no other test's imports count.
_IMPORT_PROBE = """
import json, sys
from datetime import UTC, datetime
import psycopg
from dry_run.service import run_invocation

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    result = run_invocation(
        conn, tenant_id=sys.argv[2], batch_size=5, run_id=sys.argv[3],
        clock=lambda: datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
        dispatch_enabled=sys.argv[4] == "true", live_runtime=lambda: None,
    )
loaded = [m for m in ("dry_run.live", "dry_run.live_ledger", "dry_run.senders.whatsapp",
                      "dry_run.senders.email", "boto3", "icalendar", "urllib3")
          if m in sys.modules]
print(json.dumps({"dryRun": result.dry_run, "loaded": loaded}))
"""


@pytest.mark.parametrize("flag", ["false", "true"])
def test_a_dry_run_never_loads_the_send_path(migrated_db: str, flag: str) -> None:
    import json
    import subprocess
    import sys

    # GIVEN a tenant in dry_run (with the flag off, or on: shadow mode)
    with psycopg.connect(migrated_db) as conn:
        insert_tenant(conn, "t-1")
        insert_leads(conn, "t-1", 2)

    # WHEN a fresh interpreter runs it
    probe = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, migrated_db, "t-1", f"r-{flag}", flag],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    # THEN it was a dry run, and neither the live code nor any sender's library was imported
    outcome = json.loads(probe.stdout.strip().splitlines()[-1])
    assert outcome == {"dryRun": True, "loaded": []}
