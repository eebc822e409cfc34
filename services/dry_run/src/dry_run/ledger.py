"""SQL adapter for the dry-run ledger: the run registry, usage, replays and recording."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.rows import dict_row

from dry_run.policy import DAY, HOUR, Channel, ChannelUsage, Decision, Rejection

# Local dates run from UTC-12 to UTC+14: a window of instants starts no earlier than this many
# days before its first UTC date, which lets the partitions outside it be pruned.
_ZONE_SLACK = timedelta(days=1)
MINUTE = timedelta(minutes=1)

# Claims the runId for this tenant in the run's transaction. A concurrent claim of the same id
# waits for this transaction: then it sees the owner, and replays or refuses.
_CLAIM_RUN = """
INSERT INTO runs (run_id, tenant_id, mode) VALUES (%(run)s, %(tenant)s, %(mode)s)
ON CONFLICT (run_id) DO NOTHING
RETURNING tenant_id
"""
_RUN_OWNER = "SELECT tenant_id, mode FROM runs WHERE run_id = %s"

# The tenant's intended sends per channel in the rolling hour and day before `now`, counting
# every committed one (including those an overlapping run recorded with a clock ahead of ours):
# the whole minutes inside each window from send_counts, and each window's first, partial
# minute from the ledger itself (at most a minute of sends), so the count is exact.
_USAGE = """
SELECT channel, 'minutes' AS part,
       coalesce(sum(sends) FILTER (WHERE minute > %(hour_start)s), 0) AS hour_count,
       min(first_at) FILTER (WHERE minute > %(hour_start)s) AS hour_oldest,
       sum(sends) AS day_count,
       min(first_at) AS day_oldest
FROM send_counts
WHERE tenant_id = %(tenant)s AND mode = %(mode)s AND minute > %(day_start)s AND sends > 0
GROUP BY channel
UNION ALL
SELECT channel, 'edges',
       count(*) FILTER (WHERE decided_at > %(hour_start)s AND decided_at < %(hour_edge)s),
       min(decided_at) FILTER (WHERE decided_at > %(hour_start)s AND decided_at < %(hour_edge)s),
       count(*) FILTER (WHERE decided_at > %(day_start)s AND decided_at < %(day_edge)s),
       min(decided_at) FILTER (WHERE decided_at > %(day_start)s AND decided_at < %(day_edge)s)
FROM dry_run_log
WHERE tenant_id = %(tenant)s AND action = 'would_send' AND local_date >= %(since)s
  AND ((decided_at > %(hour_start)s AND decided_at < %(hour_edge)s)
       OR (decided_at > %(day_start)s AND decided_at < %(day_edge)s))
GROUP BY channel
"""

# Live mode counts the claims that stand (claimed, sent, unknown: DOMAIN.md "Live sending",
# point 5) by the time of their latest claim; its whole minutes come from send_counts as above.
_LIVE_EDGES = """
SELECT channel, 'edges' AS part,
       count(*) FILTER (WHERE claimed_at > %(hour_start)s AND claimed_at < %(hour_edge)s)
           AS hour_count,
       min(claimed_at) FILTER (WHERE claimed_at > %(hour_start)s AND claimed_at < %(hour_edge)s)
           AS hour_oldest,
       count(*) FILTER (WHERE claimed_at > %(day_start)s AND claimed_at < %(day_edge)s)
           AS day_count,
       min(claimed_at) FILTER (WHERE claimed_at > %(day_start)s AND claimed_at < %(day_edge)s)
           AS day_oldest
FROM dispatches
WHERE tenant_id = %(tenant)s AND status IN ('claimed', 'sent', 'unknown')
  AND ((claimed_at > %(hour_start)s AND claimed_at < %(hour_edge)s)
       OR (claimed_at > %(day_start)s AND claimed_at < %(day_edge)s))
GROUP BY channel
"""
_LIVE_USAGE = _USAGE[: _USAGE.index("UNION ALL")] + "UNION ALL\n" + _LIVE_EDGES

# The meeting starts the mode's ledger already holds from ``since`` on: a dry run's earlier
# proposals, a live run's booked meetings.
_TAKEN_SLOTS = {
    "dry_run": """
SELECT meeting_at FROM dry_run_log
WHERE tenant_id = %(tenant)s AND meeting_at >= %(since)s AND action = 'would_send'
""",
    "live": """
SELECT starts_at FROM meetings
WHERE tenant_id = %(tenant)s AND starts_at >= %(since)s AND status = 'booked'
""",
}

# This batch's sends, added to their minute (under the tenant's lock, with the ledger rows).
_COUNT_SENDS = """
INSERT INTO send_counts AS c (tenant_id, mode, channel, minute, sends, first_at)
SELECT %(tenant)s, %(mode)s, u.channel, %(minute)s, u.sends, %(at)s
FROM json_to_recordset(%(rows)s::json) AS u (channel text, sends integer)
ON CONFLICT (tenant_id, mode, channel, minute) DO UPDATE
SET sends = c.sends + excluded.sends, first_at = least(c.first_at, excluded.first_at)
"""

_RUN = """
SELECT lead_id::text AS lead_id, action, reason, channel, template, dispatch_key, not_before,
       details, local_date, meeting_at
FROM dry_run_log
WHERE tenant_id = %s AND run_id = %s
ORDER BY id
"""

_COPY = (
    "COPY dry_run_log (run_id, tenant_id, lead_id, channel, action, reason, dispatch_key, "
    "template, flag_enabled, not_before, details, decided_at, local_date, meeting_at) FROM STDIN"
)


def window_start_date(start: datetime) -> Any:
    """The earliest local date an instant at or after ``start`` can have, anywhere."""
    return (start - _ZONE_SLACK).date()


class RunClaim(NamedTuple):
    """Whether this run claimed its id now, the tenant that owns it and the run's mode."""

    claimed: bool
    owner: str
    mode: str


def claim_run(conn: psycopg.Connection[Any], run_id: str, tenant_id: str, mode: str) -> RunClaim:
    """Claim ``run_id`` for the tenant, or learn which tenant's run already owns it."""
    if conn.execute(_CLAIM_RUN, {"run": run_id, "tenant": tenant_id, "mode": mode}).fetchone():
        return RunClaim(True, tenant_id, mode)
    row = conn.execute(_RUN_OWNER, (run_id,)).fetchone()
    assert row is not None, "ON CONFLICT saw a committed row, which this statement sees too"
    return RunClaim(False, str(row[0]), str(row[1]))


def minute(moment: datetime) -> datetime:
    """The minute an instant counts in (``send_counts.minute``)."""
    return moment.replace(second=0, microsecond=0)


def channel_usage(
    conn: psycopg.Connection[Any], tenant_id: str, now: datetime, mode: str = "dry_run"
) -> dict[Channel, ChannelUsage]:
    """The tenant's sends per channel inside the rate windows, exactly, in one query."""
    hour_start, day_start = now - HOUR, now - DAY
    params = {
        "mode": mode,
        "tenant": tenant_id,
        "hour_start": hour_start,
        "hour_edge": minute(hour_start) + MINUTE,
        "day_start": day_start,
        "day_edge": minute(day_start) + MINUTE,
        "since": window_start_date(day_start),
    }
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(_LIVE_USAGE if mode == "live" else _USAGE, params).fetchall()
    usage: dict[Channel, ChannelUsage] = {}
    # Edge rows come second: their sends are older than any whole minute's, so their oldest
    # send, when there is one, is the window's.
    for row in sorted(rows, key=lambda row: row["part"] == "edges"):
        known = usage.get(row["channel"], ChannelUsage())
        usage[cast(Channel, row["channel"])] = ChannelUsage(
            hour_count=known.hour_count + row["hour_count"],
            hour_oldest=row["hour_oldest"] or known.hour_oldest,
            day_count=known.day_count + row["day_count"],
            day_oldest=row["day_oldest"] or known.day_oldest,
        )
    return usage


def taken_slots(
    conn: psycopg.Connection[Any], tenant_id: str, mode: str, since: datetime
) -> list[datetime]:
    """The meeting starts from ``since`` on that the mode's ledger holds for the tenant."""
    rows = conn.execute(_TAKEN_SLOTS[mode], {"tenant": tenant_id, "since": since}).fetchall()
    return [row[0] for row in rows]


def count_sends(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    decisions: Sequence[Decision],
    at: datetime,
    mode: str = "dry_run",
) -> None:
    """Add the batch's sends to their minute of ``send_counts`` (one statement, if any)."""
    sends = Counter(d.channel for d in decisions if d.action == "would_send" and d.channel)
    if not sends:
        return
    conn.execute(
        _COUNT_SENDS,
        {
            "mode": mode,
            "tenant": tenant_id,
            "minute": minute(at),
            "at": at,
            "rows": json.dumps([{"channel": c, "sends": n} for c, n in sorted(sends.items())]),
        },
    )


def read_run(conn: psycopg.Connection[Any], tenant_id: str, run_id: str) -> list[Decision]:
    """The decisions the tenant's run ``run_id`` recorded, in decision order."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(_RUN, (tenant_id, run_id)).fetchall()
    return [decision_from_row(row) for row in rows]


def decision_from_row(row: Mapping[str, Any]) -> Decision:
    """A recorded decision (a ``dry_run_log`` or ``live_log`` row, by column name)."""
    return Decision(
        lead_id=row["lead_id"],
        action=row["action"],
        reason=row["reason"],
        channel=row["channel"],
        template=row["template"],
        dispatch_key=row["dispatch_key"],
        not_before=row["not_before"],
        details=tuple(Rejection(item["channel"], item["reason"]) for item in row["details"]),
        local_date=row["local_date"],
        meeting_at=row["meeting_at"],
        provider_message_id=row.get("provider_message_id"),
        error_code=row.get("error_code"),
    )


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


def field_text(value: str | None) -> str:
    """A text value as a COPY text-format field (escaped; None is NULL)."""
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
    meeting_at = decision.meeting_at
    return "\t".join(
        (
            run_id,
            tenant_id,
            field_text(decision.lead_id),
            field_text(decision.channel),
            field_text(decision.action),
            field_text(decision.reason),
            field_text(decision.dispatch_key),
            field_text(decision.template),
            "t" if flag_enabled else "f",
            _NULL if not_before is None else not_before.isoformat(),
            field_text(_details_text(decision.details)),
            decided_at,
            _NULL if local_date is None else local_date.isoformat(),
            _NULL if meeting_at is None else meeting_at.isoformat(),
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
    copy_decisions(
        conn, _COPY, run_id, tenant_id, decisions, flag_enabled=flag_enabled, decided_at=decided_at
    )


def copy_decisions(
    conn: psycopg.Connection[Any],
    statement: str,
    run_id: str,
    tenant_id: str,
    decisions: Sequence[Decision],
    *,
    flag_enabled: bool,
    decided_at: datetime,
    more: Callable[[Decision], Sequence[str | None]] | None = None,
) -> None:
    """COPY the decisions into a ledger: ``_COPY``'s columns, then ``more(decision)``'s."""
    if not decisions:
        return
    run = field_text(run_id)
    tenant = field_text(tenant_id)
    moment = decided_at.isoformat()
    lines = [
        "\t".join(
            (
                copy_line(run, tenant, decision, flag_enabled=flag_enabled, decided_at=moment),
                *(field_text(value) for value in (more(decision) if more else ())),
            )
        )
        for decision in decisions
    ]
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write("\n".join(lines) + "\n")
