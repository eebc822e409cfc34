"""SQL adapter for the dry-run ledger: the run registry, usage, replays and recording."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.rows import dict_row

from dry_run.policy import DAY, Channel, ChannelUsage, Decision, Rejection

# Local dates run from UTC-12 to UTC+14: a window of instants starts no earlier than this many
# days before its first UTC date, which lets the partitions outside it be pruned.
_ZONE_SLACK = timedelta(days=1)

# Claims the runId for this tenant in the run's transaction. A concurrent claim of the same id
# waits for this transaction: then it sees the owner, and replays or refuses.
_CLAIM_RUN = """
INSERT INTO runs (run_id, tenant_id, mode) VALUES (%(run)s, %(tenant)s, %(mode)s)
ON CONFLICT (run_id) DO NOTHING
RETURNING tenant_id
"""
_RUN_OWNER = "SELECT tenant_id FROM runs WHERE run_id = %s"

# The tenant's intended sends per channel in the rolling hour and day before `now`: every
# committed one, including those an overlapping run recorded with a clock ahead of ours.
_USAGE = """
SELECT channel,
       count(*) FILTER (WHERE decided_at > %(now)s - interval '1 hour') AS hour_count,
       min(decided_at) FILTER (WHERE decided_at > %(now)s - interval '1 hour') AS hour_oldest,
       count(*) AS day_count,
       min(decided_at) AS day_oldest
FROM dry_run_log
WHERE tenant_id = %(tenant)s AND action = 'would_send'
  AND decided_at > %(now)s - interval '1 day' AND local_date >= %(since)s
GROUP BY channel
"""

_RUN = """
SELECT lead_id::text AS lead_id, action, reason, channel, template, dispatch_key, not_before,
       details, local_date
FROM dry_run_log
WHERE tenant_id = %s AND run_id = %s
ORDER BY id
"""

_COPY = (
    "COPY dry_run_log (run_id, tenant_id, lead_id, channel, action, reason, dispatch_key, "
    "template, flag_enabled, not_before, details, decided_at, local_date) FROM STDIN"
)


def window_start_date(start: datetime) -> Any:
    """The earliest local date an instant at or after ``start`` can have, anywhere."""
    return (start - _ZONE_SLACK).date()


class RunClaim(NamedTuple):
    """Whether this run claimed its id now, and the tenant that owns it."""

    claimed: bool
    owner: str


def claim_run(conn: psycopg.Connection[Any], run_id: str, tenant_id: str, mode: str) -> RunClaim:
    """Claim ``run_id`` for the tenant, or learn which tenant's run already owns it."""
    if conn.execute(_CLAIM_RUN, {"run": run_id, "tenant": tenant_id, "mode": mode}).fetchone():
        return RunClaim(True, tenant_id)
    row = conn.execute(_RUN_OWNER, (run_id,)).fetchone()
    assert row is not None, "ON CONFLICT saw a committed row, which this statement sees too"
    return RunClaim(False, str(row[0]))


def channel_usage(
    conn: psycopg.Connection[Any], tenant_id: str, now: datetime
) -> dict[Channel, ChannelUsage]:
    """Count the ledger's sends per channel inside the rate windows, in one query."""
    params = {"tenant": tenant_id, "now": now, "since": window_start_date(now - DAY)}
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(_USAGE, params).fetchall()
    return {
        cast(Channel, row["channel"]): ChannelUsage(
            row["hour_count"], row["hour_oldest"], row["day_count"], row["day_oldest"]
        )
        for row in rows
    }


def read_run(conn: psycopg.Connection[Any], tenant_id: str, run_id: str) -> list[Decision]:
    """The decisions the tenant's run ``run_id`` recorded, in decision order."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(_RUN, (tenant_id, run_id)).fetchall()
    return [
        Decision(
            lead_id=row["lead_id"],
            action=row["action"],
            reason=row["reason"],
            channel=row["channel"],
            template=row["template"],
            dispatch_key=row["dispatch_key"],
            not_before=row["not_before"],
            details=tuple(Rejection(item["channel"], item["reason"]) for item in row["details"]),
            local_date=row["local_date"],
        )
        for row in rows
    ]


def rejections_json(details: tuple[Rejection, ...]) -> list[dict[str, str]]:
    """Every rejected channel with its reason, as stored in ``details`` and returned."""
    return [{"channel": item.channel, "reason": item.reason} for item in details]


@lru_cache(maxsize=512)
def _details_text(details: tuple[Rejection, ...]) -> str:
    # Few distinct shapes exist (channel x reason), so serialise each once; COPY's text format
    # hands the JSON text to the jsonb column as is.
    return json.dumps(rejections_json(details))


# COPY's text format: a field is escaped for backslash, tab, newline and carriage return, and
# NULL is \N. Rows are formatted here and sent in one write: psycopg's write_row adapts each
# value on its own (~17 µs a row, measured), a formatted line costs ~2 µs. Every text value is
# escaped, though ids, keys and enums never hold those characters.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_NULL = "\\N"


def _field(value: str | None) -> str:
    if value is None:
        return _NULL
    # A search is ~10x cheaper than translate, and almost no value needs escaping.
    return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


def copy_line(
    run_id: str, tenant_id: str, decision: Decision, *, flag_enabled: bool, decided_at: str
) -> str:
    """One ``dry_run_log`` row in COPY text format, the columns in ``_COPY``'s order."""
    not_before = decision.not_before
    local_date = decision.local_date
    return "\t".join(
        (
            run_id,
            tenant_id,
            _field(decision.lead_id),
            _field(decision.channel),
            _field(decision.action),
            _field(decision.reason),
            _field(decision.dispatch_key),
            _field(decision.template),
            "t" if flag_enabled else "f",
            _NULL if not_before is None else not_before.isoformat(),
            _field(_details_text(decision.details)),
            decided_at,
            _NULL if local_date is None else local_date.isoformat(),
        )
    )


def record(
    conn: psycopg.Connection[Any],
    run_id: str,
    tenant_id: str,
    decisions: Sequence[Decision],
    *,
    flag_enabled: bool,
    decided_at: datetime,
) -> None:
    """Write one row per decision with a single COPY (inside the caller's transaction)."""
    if not decisions:
        return
    run = _field(run_id)
    tenant = _field(tenant_id)
    moment = decided_at.isoformat()
    lines = [
        copy_line(run, tenant, decision, flag_enabled=flag_enabled, decided_at=moment)
        for decision in decisions
    ]
    with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.write("\n".join(lines) + "\n")
