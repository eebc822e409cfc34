"""Paths and small helpers the tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = REPO_ROOT / "migrations"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def insert_tenant(
    conn: Any,
    tenant_id: str = "t-1",
    *,
    cooldown_hours: int = 72,
    limits: dict[str, tuple[int, int]] | None = None,
) -> str:
    """Insert a tenant (São Paulo time) and optional channel limits."""
    conn.execute(
        "INSERT INTO tenants (id, name, cooldown_hours) VALUES (%s, %s, %s)",
        (tenant_id, f"Tenant {tenant_id}", cooldown_hours),
    )
    for channel, (per_hour, per_day) in (limits or {}).items():
        conn.execute(
            "INSERT INTO channel_limits (tenant_id, channel, per_hour, per_day) "
            "VALUES (%s, %s, %s, %s)",
            (tenant_id, channel, per_hour, per_day),
        )
    return tenant_id


def insert_leads(conn: Any, tenant_id: str, count: int, **columns: Any) -> list[str]:
    """Insert ``count`` leads, oldest first, reachable by WhatsApp unless overridden."""
    values = {
        "phone": "+5511987654321",
        "email": "lead@example.com",
        "whatsapp_opt_in": True,
        "email_opt_in": True,
        "stage": "new",
    }
    values.update(columns)
    ids: list[str] = []
    with conn.cursor() as cursor:
        # created_at continues after the tenant's existing leads, so insertion order is age order.
        row = cursor.execute("SELECT count(*) FROM leads WHERE tenant_id = %s", (tenant_id,))
        existing = row.fetchone()[0]  # type: ignore[index]
        for index in range(existing, existing + count):
            cursor.execute(
                "INSERT INTO leads (tenant_id, full_name, phone, email, whatsapp_opt_in, "
                "email_opt_in, stage, opted_out_at, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "timestamptz '2026-01-01 00:00Z' + make_interval(secs => %s)) RETURNING id::text",
                (
                    tenant_id,
                    f"Lead {index}",
                    values["phone"],
                    values["email"],
                    values["whatsapp_opt_in"],
                    values["email_opt_in"],
                    values["stage"],
                    values.get("opted_out_at"),
                    index,
                ),
            )
            row = cursor.fetchone()
            assert row is not None
            ids.append(row[0])
    return ids


def run_handler_with_own_clock(
    url: str, event: dict[str, Any], base: Any, offset_s: float, barrier: Any
) -> dict[str, Any]:
    """A separate process's invocation: its own container, its own clock (``base + offset``,
    advancing in real time), started together with the others at ``barrier``."""
    import time
    from datetime import timedelta

    from devtools.lambda_context import LocalLambdaContext
    from dry_run import bootstrap, handler

    deps = bootstrap.build({"DATABASE_URL": url})
    started = time.monotonic()

    def clock() -> Any:
        return base + timedelta(seconds=offset_s + time.monotonic() - started)

    try:
        deps.connections.run(lambda conn: conn.execute("SELECT 1"))  # warm, like a container
        barrier.wait(timeout=60)
        return handler.handle(event, LocalLambdaContext(), deps=deps, clock=clock)
    finally:
        deps.close()
