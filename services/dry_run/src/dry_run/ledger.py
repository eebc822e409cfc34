"""SQL adapter for the dry-run ledger (``dry_run_log``): usage, replays and recording."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

import psycopg

from dry_run.policy import Channel, ChannelUsage, Decision, Rejection

# The tenant's intended sends per channel in the rolling hour and day before `now`.
_USAGE = """
SELECT channel,
       count(*) FILTER (WHERE decided_at > %(now)s - interval '1 hour'),
       min(decided_at) FILTER (WHERE decided_at > %(now)s - interval '1 hour'),
       count(*),
       min(decided_at)
FROM dry_run_log
WHERE tenant_id = %(tenant)s AND action = 'would_send'
  AND decided_at > %(now)s - interval '1 day' AND decided_at <= %(now)s
GROUP BY channel
"""

_RUN = """
SELECT tenant_id, lead_id::text, action, reason, channel, template, dispatch_key, not_before,
       details
FROM dry_run_log
WHERE run_id = %s
ORDER BY id
"""

_COPY = (
    "COPY dry_run_log (run_id, tenant_id, lead_id, channel, action, reason, dispatch_key, "
    "template, flag_enabled, not_before, details, decided_at) FROM STDIN"
)


def channel_usage(
    conn: psycopg.Connection[Any], tenant_id: str, now: datetime
) -> dict[Channel, ChannelUsage]:
    """Count the ledger's sends per channel inside the rate windows, in one query."""
    rows = conn.execute(_USAGE, {"tenant": tenant_id, "now": now}).fetchall()
    return {
        cast(Channel, channel): ChannelUsage(hour_count, hour_oldest, day_count, day_oldest)
        for channel, hour_count, hour_oldest, day_count, day_oldest in rows
    }


def read_run(conn: psycopg.Connection[Any], run_id: str) -> tuple[str | None, list[Decision]]:
    """The tenant and the decisions already recorded under ``run_id``, in decision order."""
    rows = conn.execute(_RUN, (run_id,)).fetchall()
    if not rows:
        return None, []
    decisions = [
        Decision(
            lead_id=row[1],
            action=row[2],
            reason=row[3],
            channel=row[4],
            template=row[5],
            dispatch_key=row[6],
            not_before=row[7],
            details=tuple(Rejection(item["channel"], item["reason"]) for item in row[8]),
        )
        for row in rows
    ]
    return rows[0][0], decisions


def _rejections_json(details: tuple[Rejection, ...]) -> list[dict[str, str]]:
    return [{"channel": item.channel, "reason": item.reason} for item in details]


def details_json(decision: Decision) -> list[dict[str, str]]:
    """Every rejected channel with its reason, as stored in ``details`` and returned."""
    return _rejections_json(decision.details)


@lru_cache(maxsize=512)
def _details_text(details: tuple[Rejection, ...]) -> str:
    # Few distinct shapes exist (channel x reason), so serialise each once; COPY's text format
    # hands the JSON text to the jsonb column as is.
    return json.dumps(_rejections_json(details))


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
    with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
        for decision in decisions:
            copy.write_row(
                (
                    run_id,
                    tenant_id,
                    decision.lead_id,
                    decision.channel,
                    decision.action,
                    decision.reason,
                    decision.dispatch_key,
                    decision.template,
                    flag_enabled,
                    decision.not_before,
                    _details_text(decision.details),
                    decided_at,
                )
            )
