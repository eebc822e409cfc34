"""SQL adapter for live mode: the ``dispatches`` ledger, ``live_log``, meetings, senders,
message templates, opt-outs and paused channels.

Each function is one statement whatever the batch size (rows travel as one JSON array, as in
``leads.set_due``), so a live run's claim and record cost a constant number of round trips.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal, NamedTuple, cast

import psycopg
from psycopg.rows import dict_row

from dry_run.ledger import copy_decisions, decision_from_row
from dry_run.policy import Channel, Decision, KeyState, key_state

# The states of the batch's keys already in the ledger. A key is for one local date, which is
# at most ~38 h behind `now` anywhere: three days of the lead's claims cover every key.
_KEY_STATES = """
SELECT dispatch_key, status, retryable, attempt, retry_at
FROM dispatches
WHERE tenant_id = %(tenant)s AND lead_id = ANY (%(leads)s::uuid[]) AND created_at > %(since)s
"""

_SENDERS = """
SELECT channel, sender, secret_arn, configuration_set, paused_at IS NOT NULL AS paused
FROM tenant_senders WHERE tenant_id = %s
"""

# The tenant's own content for a template name wins over the default (tenant_id NULL).
_TEMPLATES = """
SELECT DISTINCT ON (template) template, channel, language, subject, body, parameters
FROM message_templates
WHERE tenant_id = %s OR tenant_id IS NULL
ORDER BY template, tenant_id NULLS LAST
"""

# The claim (DOMAIN.md "Live sending", point 1): a new key is inserted as `claimed`; a key
# already there is claimed again only when its retryable failure allows it (attempts left, its
# backoff over). Whatever else is there is left alone and not returned: never sent again.
_CLAIM = """
INSERT INTO dispatches AS d (tenant_id, lead_id, channel, dispatch_key, status, run_id,
                             template, local_date, attempt, claimed_at, created_at, updated_at)
SELECT %(tenant)s, u.lead_id, u.channel, u.dispatch_key, 'claimed', %(run)s, u.template,
       u.local_date, 1, %(now)s, %(now)s, %(now)s
FROM json_to_recordset(%(rows)s::json)
     AS u (lead_id uuid, channel text, dispatch_key text, template text, local_date date)
ON CONFLICT (dispatch_key) DO UPDATE
SET status = 'claimed', run_id = excluded.run_id, attempt = d.attempt + 1,
    claimed_at = excluded.claimed_at, updated_at = excluded.updated_at,
    error_code = NULL, retryable = NULL, retry_at = NULL
WHERE d.status = 'failed' AND d.retryable AND d.attempt < %(max_attempts)s
  AND d.retry_at <= %(now)s
RETURNING d.dispatch_key, d.attempt
"""

# A claimed invitation holds its slot (a retried one moves to the slot proposed now).
_BOOK = """
INSERT INTO meetings AS m (tenant_id, lead_id, dispatch_key, starts_at, ends_at)
SELECT %(tenant)s, u.lead_id, u.dispatch_key, u.starts_at, u.ends_at
FROM json_to_recordset(%(rows)s::json)
     AS u (lead_id uuid, dispatch_key text, starts_at timestamptz, ends_at timestamptz)
ON CONFLICT (dispatch_key) DO UPDATE
SET starts_at = excluded.starts_at, ends_at = excluded.ends_at, status = 'booked'
"""

_LOG_COPY = (
    "COPY live_log (run_id, tenant_id, lead_id, channel, action, reason, dispatch_key, "
    "template, flag_enabled, not_before, details, decided_at, local_date, meeting_at, "
    "provider_message_id, error_code) FROM STDIN"
)

# The provider's answers (point 3), only on rows this run still holds as claimed.
_RECORD = """
UPDATE dispatches d
SET status = u.status, provider_message_id = u.provider_message_id, error_code = u.error_code,
    retryable = u.retryable, retry_at = u.retry_at, updated_at = %(now)s,
    sent_at = CASE WHEN u.status = 'sent' THEN %(now)s ELSE d.sent_at END
FROM json_to_recordset(%(rows)s::json)
     AS u (dispatch_key text, status text, provider_message_id text, error_code text,
           retryable boolean, retry_at timestamptz)
WHERE d.dispatch_key = u.dispatch_key AND d.run_id = %(run)s AND d.status = 'claimed'
"""

# Claims that were never sent (quiet hours began, or the time ran out, before the call): a first
# claim is removed, a repeated one goes back to the failure it retried, its attempt unused.
_RELEASE = """
WITH gone AS (
    DELETE FROM dispatches
    WHERE dispatch_key = ANY (%(keys)s::text[]) AND run_id = %(run)s AND status = 'claimed'
      AND attempt = 1
    RETURNING dispatch_key
)
UPDATE dispatches d
SET status = 'failed', attempt = d.attempt - 1, error_code = 'not_sent', retryable = true,
    retry_at = %(retry_at)s, updated_at = %(now)s
WHERE d.dispatch_key = ANY (%(keys)s::text[]) AND d.run_id = %(run)s AND d.status = 'claimed'
  AND d.attempt > 1
"""

# Sends that did not happen (failed, released) leave their minute's count.
_UNCOUNT = """
UPDATE send_counts c SET sends = greatest(c.sends - u.sends, 0)
FROM json_to_recordset(%(rows)s::json) AS u (channel text, sends integer)
WHERE c.tenant_id = %(tenant)s AND c.mode = 'live' AND c.channel = u.channel
  AND c.minute = %(minute)s
"""

_CANCEL_MEETINGS = """
UPDATE meetings SET status = 'cancelled'
WHERE dispatch_key = ANY (%(keys)s::text[]) AND tenant_id = %(tenant)s
"""

# A lead whose send did not happen is due again at its retry (or its next chance), and its
# cooldown counts from its previous send, not this one.
_RESTORE_DUE = """
UPDATE lead_due d
SET ready = false, due_at = u.due_at, last_sent_at = u.last_sent_at
FROM json_to_recordset(%(rows)s::json)
     AS u (lead_id uuid, due_at timestamptz, last_sent_at timestamptz)
WHERE d.lead_id = ANY (string_to_array(%(ids)s, ',')::uuid[]) AND d.mode = 'live'
  AND d.lead_id = u.lead_id
"""

# A permanent "cannot reach this lead here" (WhatsApp 131026, 131050) is an opt-out of the
# channel (DOMAIN.md, `opt_outs`).
_OPT_OUT = """
INSERT INTO opt_outs (tenant_id, lead_id, channel, source)
SELECT %(tenant)s, u.lead_id, u.channel, 'provider_error'
FROM json_to_recordset(%(rows)s::json) AS u (lead_id uuid, channel text)
"""

_PAUSE = """
UPDATE tenant_senders SET paused_at = %(now)s, paused_reason = %(reason)s
WHERE tenant_id = %(tenant)s AND channel = ANY (%(channels)s::text[]) AND paused_at IS NULL
RETURNING channel
"""

# A replayed run: its decisions as recorded, and its claims whose answer was never recorded
# (the invocation died between claim and record; the sweeper makes them `unknown`).
_RUN = """
SELECT lead_id::text AS lead_id, action, reason, channel, template, dispatch_key, not_before,
       details, local_date, meeting_at, provider_message_id, error_code, id AS position
FROM live_log
WHERE tenant_id = %(tenant)s AND run_id = %(run)s
UNION ALL
SELECT d.lead_id::text, 'unknown', 'outcome_unrecorded', d.channel, d.template, d.dispatch_key,
       NULL, '[]'::jsonb, d.local_date, m.starts_at, d.provider_message_id, d.error_code,
       NULL
FROM dispatches d
LEFT JOIN meetings m ON m.dispatch_key = d.dispatch_key
WHERE d.tenant_id = %(tenant)s AND d.run_id = %(run)s
  -- the run logged nothing for the lead: a released claim's row has no key, so match by lead
  -- (one row per run, lead and date: live_log_run_lead_key)
  AND NOT EXISTS (SELECT FROM live_log l
                  WHERE l.run_id = d.run_id AND l.lead_id = d.lead_id
                    AND l.local_date = d.local_date)
ORDER BY position NULLS LAST
"""


class SenderRow(NamedTuple):
    """A tenant's sender on one channel."""

    sender: str
    secret_arn: str | None
    configuration_set: str | None
    paused: bool


class TemplateRow(NamedTuple):
    """Message content for one template name (placeholders not yet rendered)."""

    channel: str
    language: str | None
    subject: str | None
    body: str
    parameters: tuple[str, ...]


class Outcome(NamedTuple):
    """How a claimed send ended, as the second transaction records it."""

    decision: Decision
    # sent, failed, unknown; or released: never sent (quiet hours, time budget).
    status: Literal["sent", "failed", "unknown", "released"]
    provider_message_id: str | None = None
    error_code: str | None = None
    retryable: bool | None = None
    retry_at: datetime | None = None
    # released: when the lead is due again, and why it was held.
    not_before: datetime | None = None
    reason: str | None = None
    unreachable: bool = False
    pause_channel: bool = False


def _json(rows: Iterable[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def key_states(
    conn: psycopg.Connection[Any], tenant_id: str, lead_ids: Sequence[str], since: datetime
) -> dict[str, KeyState]:
    """The ledger's keys for these leads claimed since ``since``, with what each allows."""
    if not lead_ids:
        return {}
    rows = conn.execute(
        _KEY_STATES, {"tenant": tenant_id, "leads": list(lead_ids), "since": since}
    ).fetchall()
    return {
        key: key_state(status, retryable, attempt, at)
        for key, status, retryable, attempt, at in rows
    }


def load_senders(conn: psycopg.Connection[Any], tenant_id: str) -> dict[Channel, SenderRow]:
    """The tenant's senders by channel."""
    rows = conn.execute(_SENDERS, (tenant_id,)).fetchall()
    return {
        cast(Channel, channel): SenderRow(sender, secret_arn, configuration_set, paused)
        for channel, sender, secret_arn, configuration_set, paused in rows
    }


def load_templates(conn: psycopg.Connection[Any], tenant_id: str) -> dict[str, TemplateRow]:
    """Message content by template name: the tenant's own, else the default."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(_TEMPLATES, (tenant_id,)).fetchall()
    return {
        row["template"]: TemplateRow(
            row["channel"],
            row["language"],
            row["subject"],
            row["body"],
            tuple(str(item) for item in row["parameters"]),
        )
        for row in rows
    }


def claim(
    conn: psycopg.Connection[Any],
    run_id: str,
    tenant_id: str,
    sends: Sequence[Decision],
    *,
    now: datetime,
    max_attempts: int,
) -> dict[str, int]:
    """Claim the sends' keys; the keys this run now holds, with their attempt number."""
    if not sends:
        return {}
    rows = [
        {
            "lead_id": d.lead_id,
            "channel": d.channel,
            "dispatch_key": d.dispatch_key,
            "template": d.template,
            "local_date": d.local_date,
        }
        for d in sends
    ]
    params = {
        "tenant": tenant_id,
        "run": run_id,
        "now": now,
        "rows": _json(rows),
        "max_attempts": max_attempts,
    }
    return {str(key): int(attempt) for key, attempt in conn.execute(_CLAIM, params).fetchall()}


def book_meetings(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    meetings: Sequence[tuple[Decision, datetime]],
) -> None:
    """Hold each claimed invitation's slot: ``(decision, ends_at)`` pairs."""
    if not meetings:
        return
    rows = [
        {
            "lead_id": d.lead_id,
            "dispatch_key": d.dispatch_key,
            "starts_at": d.meeting_at,
            "ends_at": ends_at,
        }
        for d, ends_at in meetings
    ]
    conn.execute(_BOOK, {"tenant": tenant_id, "rows": _json(rows)})


def record_decisions(
    conn: psycopg.Connection[Any],
    run_id: str,
    tenant_id: str,
    decisions: Sequence[Decision],
    *,
    decided_at: datetime,
) -> None:
    """Append the decisions to ``live_log`` with one COPY."""
    copy_decisions(
        conn,
        _LOG_COPY,
        run_id,
        tenant_id,
        decisions,
        flag_enabled=True,
        decided_at=decided_at,
        more=lambda d: (d.provider_message_id, d.error_code),
    )


def record_outcomes(
    conn: psycopg.Connection[Any], run_id: str, outcomes: Sequence[Outcome], now: datetime
) -> None:
    """Record the providers' answers on the claims (sent, failed, unknown)."""
    called = [o for o in outcomes if o.status != "released"]
    if not called:
        return
    rows = [
        {
            "dispatch_key": o.decision.dispatch_key,
            "status": o.status,
            "provider_message_id": o.provider_message_id,
            "error_code": o.error_code,
            "retryable": o.retryable,
            "retry_at": o.retry_at,
        }
        for o in called
    ]
    conn.execute(_RECORD, {"run": run_id, "now": now, "rows": _json(rows)})


def release(
    conn: psycopg.Connection[Any],
    run_id: str,
    keys: Sequence[str],
    retry_at: datetime,
    now: datetime,
) -> None:
    """Give back claims that were never sent (no provider call was made for them)."""
    if keys:
        conn.execute(
            _RELEASE, {"run": run_id, "keys": list(keys), "retry_at": retry_at, "now": now}
        )


def uncount_sends(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    channels: Sequence[str],
    minute: datetime,
) -> None:
    """Take sends that did not happen back out of the minute their claims counted in."""
    counts = Counter(channels)
    if counts:
        rows = [{"channel": c, "sends": n} for c, n in sorted(counts.items())]
        conn.execute(_UNCOUNT, {"tenant": tenant_id, "minute": minute, "rows": _json(rows)})


def cancel_meetings(conn: psycopg.Connection[Any], tenant_id: str, keys: Sequence[str]) -> None:
    """Free the slots of invitations that were not sent."""
    if keys:
        conn.execute(_CANCEL_MEETINGS, {"tenant": tenant_id, "keys": list(keys)})


def restore_due(
    conn: psycopg.Connection[Any], updates: Sequence[tuple[str, datetime, datetime | None]]
) -> None:
    """``(lead_id, due_at, last_sent_at)`` for leads whose send did not happen."""
    if not updates:
        return
    rows = [{"lead_id": lead, "due_at": due, "last_sent_at": sent} for lead, due, sent in updates]
    conn.execute(
        _RESTORE_DUE, {"rows": _json(rows), "ids": ",".join(lead for lead, _, _ in updates)}
    )


def write_opt_outs(
    conn: psycopg.Connection[Any], tenant_id: str, rows: Sequence[tuple[str, str]]
) -> None:
    """``(lead_id, channel)`` opt-outs from a provider's permanent "cannot reach"."""
    if rows:
        payload = _json({"lead_id": lead, "channel": channel} for lead, channel in rows)
        conn.execute(_OPT_OUT, {"tenant": tenant_id, "rows": payload})


def pause_channels(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    channels: Sequence[str],
    reason: str,
    now: datetime,
) -> list[str]:
    """Pause the tenant's channels; the ones this call paused (not already paused)."""
    if not channels:
        return []
    rows = conn.execute(
        _PAUSE,
        {"tenant": tenant_id, "channels": sorted(set(channels)), "reason": reason, "now": now},
    ).fetchall()
    return [str(row[0]) for row in rows]


def read_run(conn: psycopg.Connection[Any], tenant_id: str, run_id: str) -> list[Decision]:
    """What the tenant's live run ``run_id`` recorded, in decision order."""
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(_RUN, {"tenant": tenant_id, "run": run_id}).fetchall()
    return [decision_from_row(row) for row in rows]
