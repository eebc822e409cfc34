"""SQL adapter for tenants and leads: who the tenant is, and which of its leads are due."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import psycopg

from dry_run.policy import CHANNELS, Channel, ChannelLimit, Lead, Tenant

_TENANT = """
SELECT t.id, t.timezone, t.cooldown_hours,
       coalesce(
           json_agg(json_build_array(c.channel, c.per_hour, c.per_day))
               FILTER (WHERE c.channel IS NOT NULL),
           '[]'::json)
FROM tenants t
LEFT JOIN channel_limits c ON c.tenant_id = t.id
WHERE t.id = %s
GROUP BY t.id
"""

# Serialises the decide-and-record section of concurrent runs for one tenant, so that the rate
# caps count every earlier send exactly; released at commit or rollback.
_LOCK_TENANT = "SELECT pg_advisory_xact_lock(hashtextextended('dry_run:' || %s, 0))"

# Due = not suppressed, stage not excluded, and no decision in the dry-run ledger within the
# cooldown except a deferral whose not_before has passed. Oldest first, locked, skipping rows
# another transaction holds. The lateral part brings the lead's recent intended sends.
_DUE_LEADS = """
SELECT l.id::text, l.phone, l.email, l.whatsapp_opt_in, l.email_opt_in, l.opted_out_at,
       l.timezone, l.stage, l.last_inbound_at, recent.last_contacted_at, recent.keys
FROM leads l
LEFT JOIN LATERAL (
    SELECT max(d.decided_at) AS last_contacted_at, array_agg(d.dispatch_key) AS keys
    FROM dry_run_log d
    WHERE d.tenant_id = l.tenant_id AND d.lead_id = l.id AND d.action = 'would_send'
      AND d.decided_at > %(now)s - greatest(%(cooldown)s, interval '48 hours')
) recent ON true
WHERE l.tenant_id = %(tenant)s
  AND l.opted_out_at IS NULL
  AND l.stage NOT IN ('customer', 'lost')
  AND NOT EXISTS (
      SELECT 1 FROM dry_run_log d
      WHERE d.tenant_id = l.tenant_id AND d.lead_id = l.id
        AND d.decided_at > %(now)s - %(cooldown)s
        AND NOT (d.action = 'deferred' AND d.not_before <= %(now)s)
  )
ORDER BY l.created_at, l.id
LIMIT %(limit)s
FOR UPDATE OF l SKIP LOCKED
"""


def load_tenant(conn: psycopg.Connection[Any], tenant_id: str) -> Tenant | None:
    """The tenant with its channel limits, or None when there is no such tenant."""
    row = conn.execute(_TENANT, (tenant_id,)).fetchone()
    if row is None:
        return None
    limits: dict[Channel, ChannelLimit] = {}
    for channel, per_hour, per_day in row[3]:
        if channel in CHANNELS:
            limits[cast(Channel, channel)] = ChannelLimit(per_hour=per_hour, per_day=per_day)
    return Tenant(id=row[0], timezone=row[1], cooldown_hours=row[2], limits=limits)


def lock_tenant(conn: psycopg.Connection[Any], tenant_id: str) -> None:
    """Take the tenant's transaction-scoped advisory lock."""
    conn.execute(_LOCK_TENANT, (tenant_id,))


def take_due_leads(
    conn: psycopg.Connection[Any], tenant: Tenant, batch_size: int, now: datetime
) -> list[Lead]:
    """Lock and return at most ``batch_size`` due leads, oldest first, in one query."""
    rows = conn.execute(
        _DUE_LEADS,
        {
            "tenant": tenant.id,
            "now": now,
            "cooldown": timedelta(hours=tenant.cooldown_hours),
            "limit": batch_size,
        },
    ).fetchall()
    return [
        Lead(
            id=row[0],
            phone=row[1],
            email=row[2],
            whatsapp_opt_in=row[3],
            email_opt_in=row[4],
            opted_out_at=row[5],
            timezone=row[6],
            stage=row[7],
            last_inbound_at=row[8],
            last_contacted_at=row[9],
            recent_dispatch_keys=frozenset(row[10] or ()),
        )
        for row in rows
    ]
