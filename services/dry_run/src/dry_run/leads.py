"""SQL adapter for tenants, leads and their due state: who the tenant is, which leads are due.

The due state (``lead_due``) is an index of the ledger kept in the transaction that records
each decision: finding a batch is a range scan of ready rows in ``created_at`` order, whatever
the tenant's size or history (migration 0010 explains the table).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.rows import dict_row

from dry_run.contacts import Verdicts
from dry_run.policy import CHANNELS, Channel, ChannelLimit, Lead, Tenant

Mode = str  # 'dry_run' or 'live', the lead_due.mode and runs.mode values
DRY_RUN: Mode = "dry_run"
LIVE: Mode = "live"

_TENANT = """
SELECT t.id, t.timezone, t.cooldown_hours, t.meeting_minutes,
       coalesce(
           json_agg(json_build_array(c.channel, c.per_hour, c.per_day))
               FILTER (WHERE c.channel IS NOT NULL),
           '[]'::json) AS limits
FROM tenants t
LEFT JOIN channel_limits c ON c.tenant_id = t.id
WHERE t.id = %s
GROUP BY t.id
"""

_TENANT_MODE = "SELECT dispatch_mode FROM tenants WHERE id = %s"

# Serialises the decide-and-record section of overlapping runs for one tenant and mode, so
# that the rate caps count every send committed before it; released at commit or rollback.
# The modes keep separate ledgers, so a dry run never waits for a live one.
_LOCK_TENANT = "SELECT pg_advisory_xact_lock(hashtextextended(%s || ':' || %s, 0))"

# Waiting leads whose time has come become ready. Bounded, so that a tenant whose scheduler
# stopped for a week catches up over a few runs instead of one long statement; rows another
# run is promoting are skipped, not waited for.
_PROMOTE = """
UPDATE lead_due d SET ready = true
FROM (
    SELECT lead_id FROM lead_due
    WHERE tenant_id = %(tenant)s AND mode = %(mode)s AND NOT ready AND due_at <= %(now)s
    ORDER BY due_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) come
WHERE d.lead_id = come.lead_id AND d.mode = %(mode)s
"""

# The oldest ready leads, locked, skipping those an overlapping run holds; with the stored
# contact verdicts and the keys of the lead's latest day of sends. Primary-key lookups only:
# the ledger is not read here.
_PICK = """
SELECT l.id::text AS id, l.phone, l.email, l.whatsapp_opt_in, l.email_opt_in, l.opted_out_at,
       l.timezone, l.stage, l.last_inbound_at, l.full_name, d.last_sent_at, d.recent_keys,
       v.phone AS checked_phone, v.phone_e164, v.email AS checked_email, v.email_normalized,
       ARRAY(SELECT coalesce(o.channel, '*') FROM opt_outs o WHERE o.lead_id = d.lead_id)
           AS opted_out_channels
FROM lead_due d
JOIN leads l ON l.id = d.lead_id
LEFT JOIN lead_contact_verdicts v ON v.lead_id = d.lead_id
WHERE d.tenant_id = %(tenant)s AND d.mode = %(mode)s AND d.ready
  AND d.lead_id <> ALL (%(taken)s::uuid[])
ORDER BY d.lead_created_at, d.lead_id
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED
"""

# Each decided lead's next due time (NULL: parked until the lead changes) and, after a send,
# its time and key (kept with the other keys of the same local date), in one statement. The
# rows travel as one JSON array: psycopg would dump five typed arrays value by value in Python
# (~20 µs a lead), json.dumps does it in C.
_SET_DUE = """
UPDATE lead_due d
SET ready = false,
    due_at = coalesce(u.due_at, 'infinity'),
    last_sent_at = coalesce(u.sent_at, d.last_sent_at),
    recent_keys = CASE
        WHEN u.sent_key IS NULL THEN d.recent_keys
        WHEN d.recent_keys_date = u.key_date THEN d.recent_keys || u.sent_key
        ELSE ARRAY[u.sent_key] END,
    recent_keys_date = coalesce(u.key_date, d.recent_keys_date)
FROM json_to_recordset(%(rows)s::json)
     AS u (lead_id uuid, due_at timestamptz, sent_at timestamptz, sent_key text, key_date date)
-- "= ANY" lets the primary key find the rows whatever the statistics say: a hash join over
-- the whole table would make this statement cost the tenant's size.
WHERE d.lead_id = ANY (string_to_array(%(ids)s, ',')::uuid[]) AND d.mode = %(mode)s
  AND d.lead_id = u.lead_id
"""

_SAVE_VERDICTS = """
INSERT INTO lead_contact_verdicts AS v (lead_id, phone, phone_e164, email, email_normalized)
SELECT * FROM json_to_recordset(%(rows)s::json)
     AS u (lead_id uuid, phone text, phone_e164 text, email text, email_normalized text)
ON CONFLICT (lead_id) DO UPDATE
SET phone = excluded.phone, phone_e164 = excluded.phone_e164, email = excluded.email,
    email_normalized = excluded.email_normalized, checked_at = now()
"""


class DueLead(NamedTuple):
    """A picked lead, as read, with its stored contact verdicts."""

    lead: Lead
    verdicts: Verdicts


class DueUpdate(NamedTuple):
    """A lead's next due time (None: parked) and, after a send, its time, key and date."""

    lead_id: str
    due_at: datetime | None
    sent_at: datetime | None = None
    sent_key: str | None = None
    key_date: date | None = None


def load_tenant(conn: psycopg.Connection[Any], tenant_id: str) -> Tenant | None:
    """The tenant with its channel limits, or None when there is no such tenant."""
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(_TENANT, (tenant_id,)).fetchone()
    if row is None:
        return None
    limits: dict[Channel, ChannelLimit] = {}
    for channel, per_hour, per_day in row["limits"]:
        if channel in CHANNELS:
            limits[cast(Channel, channel)] = ChannelLimit(per_hour=per_hour, per_day=per_day)
    return Tenant(
        id=row["id"],
        timezone=row["timezone"],
        cooldown_hours=row["cooldown_hours"],
        limits=limits,
        meeting_minutes=row["meeting_minutes"],
    )


def tenant_mode(conn: psycopg.Connection[Any], tenant_id: str) -> str | None:
    """The tenant's ``dispatch_mode``, or None when there is no such tenant."""
    row = conn.execute(_TENANT_MODE, (tenant_id,)).fetchone()
    return None if row is None else str(row[0])


def lock_tenant(conn: psycopg.Connection[Any], tenant_id: str, mode: Mode = DRY_RUN) -> None:
    """Take the tenant's transaction-scoped advisory lock for the mode."""
    conn.execute(_LOCK_TENANT, (mode, tenant_id))


def promote_due(
    conn: psycopg.Connection[Any], tenant_id: str, mode: Mode, now: datetime, limit: int
) -> int:
    """Make ready (at most ``limit``) waiting leads due by ``now``; how many."""
    cursor = conn.execute(_PROMOTE, {"tenant": tenant_id, "mode": mode, "now": now, "limit": limit})
    return cursor.rowcount


def pick_due_leads(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    mode: Mode,
    batch_size: int,
    *,
    taken: Sequence[str] = (),
) -> list[DueLead]:
    """Lock and return at most ``batch_size`` ready leads, oldest first, in one query.

    ``taken``: leads this transaction already holds (its own locks do not make it skip them).
    """
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            _PICK,
            {"tenant": tenant_id, "mode": mode, "limit": batch_size, "taken": list(taken)},
        ).fetchall()
    return [
        DueLead(
            Lead(
                id=row["id"],
                phone=row["phone"],
                email=row["email"],
                whatsapp_opt_in=row["whatsapp_opt_in"],
                email_opt_in=row["email_opt_in"],
                opted_out_at=row["opted_out_at"],
                timezone=row["timezone"],
                stage=row["stage"],
                last_inbound_at=row["last_inbound_at"],
                last_contacted_at=row["last_sent_at"],
                recent_dispatch_keys=frozenset(row["recent_keys"]),
                full_name=row["full_name"],
                opted_out_channels=frozenset(row["opted_out_channels"]),
            ),
            Verdicts(
                row["checked_phone"],
                row["phone_e164"],
                row["checked_email"],
                row["email_normalized"],
            ),
        )
        for row in rows
    ]


def _iso(moment: datetime | date | None) -> str | None:
    return None if moment is None else moment.isoformat()


def set_due(conn: psycopg.Connection[Any], mode: Mode, updates: Sequence[DueUpdate]) -> None:
    """Record each lead's next due time, in one statement."""
    if not updates:
        return
    rows = [
        {
            "lead_id": update.lead_id,
            "due_at": _iso(update.due_at),
            "sent_at": _iso(update.sent_at),
            "sent_key": update.sent_key,
            "key_date": _iso(update.key_date),
        }
        for update in updates
    ]
    conn.execute(
        _SET_DUE,
        {
            "mode": mode,
            "rows": json.dumps(rows),
            "ids": ",".join(update.lead_id for update in updates),
        },
    )


def save_verdicts(conn: psycopg.Connection[Any], verdicts: Sequence[tuple[str, Verdicts]]) -> None:
    """Store the contact verdicts that changed, in one statement."""
    if not verdicts:
        return
    rows = [{"lead_id": lead_id, **verdict._asdict()} for lead_id, verdict in verdicts]
    conn.execute(_SAVE_VERDICTS, {"rows": json.dumps(rows)})
