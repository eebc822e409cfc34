"""Live mode's use case: decide, claim, send, record (DOMAIN.md, "Live sending: at most once per
dispatch key").

1. One transaction decides the batch as a dry run would (same rules, the live ledger's counts),
   adds the live gates (sender configured, channel not paused, unsubscribe ready, sandbox, the
   key's state in the ledger, the invocation's time), CLAIMS every send in ``dispatches``,
   books invitations' slots, logs the other decisions and sets each lead's next due time, and
   COMMITS, before any provider is called.
2. The claimed sends go out concurrently (a bounded thread pool, per-number pacing), each only
   if the invocation still has time for the call and its recording, and a WhatsApp one only
   outside quiet hours at that instant. No layer below retries.
3. A second transaction records each answer: ``sent``, ``failed`` (a retryable one may be
   claimed again later, at most 3 attempts) or ``unknown`` (never resent; webhooks resolve
   it). A claim never sent is released. If this transaction never happens, the claims stay
   ``claimed`` and the sweeper turns them ``unknown``: a crash can lose a send, never double it.

Imported only when a live tenant runs: the dry-run path never loads it or the senders.
"""

from __future__ import annotations

import logging
import string
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import psycopg

from dry_run import leads, ledger, live_ledger
from dry_run.leads import LIVE
from dry_run.live_ledger import Outcome, SenderRow, TemplateRow
from dry_run.meetings import Meeting
from dry_run.policy import (
    MAX_ATTEMPTS,
    SESSION_CONTENT,
    Channel,
    Decision,
    Lead,
    LiveGates,
    Tenant,
    decide_batch,
    lead_zone,
    next_local_day,
    retry_at,
)
from dry_run.quiet_hours import next_allowed_start
from dry_run.responses import RunResult
from dry_run.senders import Content, Dispatch, Sender, SendResult
from dry_run.service import (
    PROMOTE_LIMIT,
    aware,
    due_updates,
    load_and_claim,
    meeting_slots,
    replay,
    take_due,
)

_log = logging.getLogger(__name__)

# Meta's throughput per business number (Cloud API: 80 messages per second by default).
WHATSAPP_MESSAGES_PER_S = 80.0
# Kept, after the last call, to record the answers (one short transaction).
RECORD_RESERVE_S = 5.0
# A provider call's usual duration (Meta and SES answer in 0.2-0.5 s): sizes how many sends an
# invocation claims for its remaining time. A call is started only with time left for its full
# timeout (see ``_send_one``), so an optimistic size releases a few claims, never sends late.
EXPECTED_CALL_S = 0.5
# The keys of a lead's claims made within this long are read with the batch (a key is for one
# local date, at most ~38 h old anywhere).
KEY_LOOKBACK = timedelta(days=3)


class Pacer:
    """At most ``rate_per_s`` calls per second for each key (a WhatsApp business number).

    Written by hand: a dozen lines, where a rate-limit library would add a dependency to the
    Lambda for one ``sleep``. Safe to share between threads.
    """

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> None:
        """Block until the key's next call may start."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(key, now))
            self._next[key] = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


@dataclass
class LiveRuntime:
    """What live runs need, built once per container (``bootstrap``) and reused while warm.

    ``senders`` by channel (email and calendar share the SES adapter); ``sandbox`` the allowed
    recipients in normal form (empty: anyone, prod only); ``unsubscribe_ready`` whether emails
    can carry a working one-click link; ``call_timeout_s`` the longest a call can take
    (connect + read timeouts); ``secrets_prefix`` the ARN prefix tenant secrets must have.
    """

    senders: Mapping[Channel, Sender]
    sandbox: frozenset[str] = frozenset()
    unsubscribe_ready: bool = False
    concurrency: int = 12
    call_timeout_s: float = 13.0
    secrets_prefix: str | None = None
    configuration_set: str | None = None
    pacer: Pacer = field(default_factory=lambda: Pacer(WHATSAPP_MESSAGES_PER_S))
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    def executor(self) -> ThreadPoolExecutor:
        """The container's sending threads (created on the first live run)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="send"
            )
        return self._executor

    def capacity(self, remaining_s: float | None) -> int:
        """How many sends the remaining time can carry (no limit when it is not known).

        0 when even one call and its recording would not fit; else the calls that fit at
        the usual pace (the threads' or the per-number pacing's, the slower) until the last
        moment a call may still start, plus one round of the threads.
        """
        if remaining_s is None:
            return 1_000_000
        spare = remaining_s - RECORD_RESERVE_S - self.call_timeout_s
        if spare < 0:
            return 0
        rate = min(self.concurrency / EXPECTED_CALL_S, WHATSAPP_MESSAGES_PER_S)
        return int(spare * rate) + self.concurrency

    def close(self) -> None:
        """Stop the sending threads and close the senders' connections (tests)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for sender in {id(s): s for s in self.senders.values()}.values():
            close = getattr(sender, "close", None)
            if close is not None:
                close()


class Claimed(NamedTuple):
    """A send this run holds in the ledger."""

    decision: Decision
    lead: Lead
    attempt: int


_FORMATTER = string.Formatter()


class RenderError(ValueError):
    """A template's content cannot be rendered (an unknown placeholder, a bad format)."""


def first_name(full_name: str | None) -> str:
    """The lead's first name for a greeting; a neutral word when there is none."""
    words = (full_name or "").split()
    return words[0] if words else "cliente"


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` replaced by its value; ``{{``/``}}`` are literal braces.

    Only bare names are placeholders: ``str.format`` would also evaluate attributes, indexes,
    conversions and widths (``{first_name.__class__}``, ``{first_name:>999999999}``), which
    content written as data must not reach. Anything else raises RenderError.
    """
    parts: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise RenderError(f"malformed placeholder: {exc}") from None
    for literal, name, spec, conversion in parsed:
        parts.append(literal)
        if name is None:
            continue
        if name not in values or spec or conversion:
            raise RenderError(f"unknown placeholder {{{name}}}; expected one of {sorted(values)}")
        parts.append(values[name])
    return "".join(parts)


def render(template: TemplateRow, lead: Lead, meeting: Meeting | None) -> Content:
    """The content for one lead: ``{first_name}`` and, for invitations, ``{meeting_at}``."""
    values = {"first_name": first_name(lead.full_name)}
    if meeting is not None:
        local = meeting.starts_at.astimezone(ZoneInfo(meeting.timezone))
        values["meeting_at"] = local.strftime("%d/%m/%Y %H:%M")

    return Content(
        subject=None if template.subject is None else fill(template.subject, values),
        body=fill(template.body, values),
        language=template.language,
        parameters=tuple(fill(item, values) for item in template.parameters),
    )


def _failed(decision: Decision, code: str, *, pause_channel: bool = False) -> Outcome:
    # Nothing reached a provider: a definite failure, not retried (the content is data to fix).
    return Outcome(
        decision, "failed", error_code=code, retryable=False, pause_channel=pause_channel
    )


def build_dispatch(
    claimed: Claimed,
    tenant: Tenant,
    senders: Mapping[Channel, SenderRow],
    templates: Mapping[str, TemplateRow],
    runtime: LiveRuntime,
) -> Dispatch | Outcome:
    """The adapter's input for a claimed send, or the failure that stops it before any call."""
    decision, lead = claimed.decision, claimed.lead
    channel = decision.channel
    assert channel is not None
    assert decision.dispatch_key is not None
    sender = senders[channel]
    name = decision.template or SESSION_CONTENT
    template = templates.get(name)
    if template is None or template.channel != channel:
        return _failed(decision, "template_missing")
    meeting = None
    if decision.meeting_at is not None:
        meeting = Meeting(
            starts_at=decision.meeting_at,
            ends_at=decision.meeting_at + timedelta(minutes=tenant.meeting_minutes),
            timezone=tenant.timezone,
        )
    try:
        content = render(template, lead, meeting)
    except RenderError:
        return _failed(decision, "template_invalid")
    if channel == "whatsapp":
        secret_arn = sender.secret_arn
        if not secret_arn or (
            runtime.secrets_prefix and not secret_arn.startswith(runtime.secrets_prefix)
        ):
            # Every send of the channel would fail the same way (and IAM denies the read).
            return _failed(decision, "secret_outside_prefix", pause_channel=True)
        recipient = lead.phone_e164
    else:
        secret_arn = None
        recipient = lead.email_normalized
    if recipient is None:  # the policy chose the channel for a valid contact: cannot happen
        return _failed(decision, "no_recipient")
    return Dispatch(
        dispatch_key=decision.dispatch_key,
        tenant_id=tenant.id,
        lead_id=lead.id,
        channel=channel,
        template=decision.template,
        recipient=recipient,
        sender=sender.sender,
        content=content,
        secret_arn=secret_arn,
        configuration_set=sender.configuration_set or runtime.configuration_set,
        meeting=meeting,
        attempt=claimed.attempt,
    )


def outcome_of(claimed: Claimed, result: SendResult, now: datetime) -> Outcome:
    """The ledger's record of a provider's answer."""
    decision = claimed.decision
    if result.status == "sent":
        return Outcome(decision, "sent", provider_message_id=result.provider_message_id)
    if result.status == "failed":
        retry = retry_at(claimed.attempt, now) if result.retryable else None
        return Outcome(
            decision,
            "failed",
            provider_message_id=result.provider_message_id,
            error_code=result.error_code or "failed",
            retryable=bool(result.retryable),
            retry_at=retry,
            unreachable=result.unreachable,
            pause_channel=result.pause_channel,
        )
    return Outcome(
        decision,
        "unknown",
        provider_message_id=result.provider_message_id,
        error_code=result.error_code,
    )


def _send_one(
    claimed: Claimed,
    dispatch: Dispatch,
    *,
    runtime: LiveRuntime,
    tenant: Tenant,
    clock: Callable[[], datetime],
    remaining_s: Callable[[], float] | None,
) -> Outcome:
    decision = claimed.decision
    if dispatch.channel == "whatsapp":
        runtime.pacer.wait(dispatch.sender)
    # After the pacing's wait: the call starts only with time for its timeout and the record.
    if remaining_s is not None and remaining_s() < runtime.call_timeout_s + RECORD_RESERVE_S:
        return Outcome(decision, "released", not_before=aware(clock()), reason="time_budget")
    if dispatch.channel == "whatsapp":
        # Quiet hours at the moment of sending, not only at the decision's.
        opens_at = next_allowed_start(aware(clock()), lead_zone(claimed.lead, tenant))
        if opens_at is not None:
            return Outcome(decision, "released", not_before=opens_at, reason="quiet_hours")
    try:
        result = runtime.senders[dispatch.channel].send(dispatch)
    except Exception:  # an adapter bug after the request may have left: the outcome is unknown
        _log.exception("sender raised for dispatch %s: recorded unknown", dispatch.dispatch_key)
        result = SendResult("unknown", error_code="sender_error")
    return outcome_of(claimed, result, aware(clock()))


def send_all(
    claims: list[Claimed],
    *,
    tenant: Tenant,
    senders: Mapping[Channel, SenderRow],
    templates: Mapping[str, TemplateRow],
    runtime: LiveRuntime,
    clock: Callable[[], datetime],
    remaining_s: Callable[[], float] | None,
) -> list[Outcome]:
    """Send the claims concurrently; one outcome per claim, in the claims' order."""
    prepared = [build_dispatch(c, tenant, senders, templates, runtime) for c in claims]
    pool = runtime.executor()
    futures = {
        index: pool.submit(
            _send_one,
            claim,
            item,
            runtime=runtime,
            tenant=tenant,
            clock=clock,
            remaining_s=remaining_s,
        )
        for index, (claim, item) in enumerate(zip(claims, prepared, strict=True))
        if isinstance(item, Dispatch)
    }
    # A claim that could not be prepared already holds its (failed) outcome.
    return [
        item if isinstance(item, Outcome) else futures[index].result()
        for index, item in enumerate(prepared)
    ]


def _next_chance(lead: Lead, tenant: Tenant, now: datetime) -> datetime:
    """When a lead whose send failed for good is due again: the lead was decided, so it waits
    out the cooldown (DOMAIN.md, "Which leads a run takes"), and at least until its next local
    day, when its intents get new keys; the failure itself counts for no cap or cooldown."""
    return max(now + timedelta(hours=tenant.cooldown_hours), next_local_day(lead, tenant, now))


def _final(outcome: Outcome) -> Decision:
    """The decision as live_log records it and the response shows it."""
    decision = outcome.decision
    if outcome.status == "released":
        assert outcome.reason is not None
        return decision._replace(
            action="deferred",
            reason=outcome.reason,
            not_before=outcome.not_before,
            dispatch_key=None,
            meeting_at=None,
        )
    status = outcome.status
    return decision._replace(
        action=status,
        # A failed invitation's meeting is cancelled: it proposes no slot any more.
        meeting_at=None if status == "failed" else decision.meeting_at,
        provider_message_id=outcome.provider_message_id,
        error_code=outcome.error_code,
    )


def record_outcomes(
    conn: psycopg.Connection[Any],
    *,
    run_id: str,
    tenant: Tenant,
    claims: list[Claimed],
    outcomes: list[Outcome],
    claimed_at: datetime,
    now: datetime,
) -> list[Decision]:
    """The second transaction: every answer, in a constant number of statements."""
    lead_of = {c.decision.lead_id: c.lead for c in claims}
    not_sent = [o for o in outcomes if o.status in ("failed", "released")]
    released = [o for o in outcomes if o.status == "released"]
    final = [_final(o) for o in outcomes]
    with conn.transaction():
        live_ledger.record_outcomes(conn, run_id, outcomes, now)
        live_ledger.release(
            conn, run_id, [str(o.decision.dispatch_key) for o in released], now, now
        )
        live_ledger.uncount_sends(
            conn, tenant.id, [str(o.decision.channel) for o in not_sent], ledger.minute(claimed_at)
        )
        live_ledger.cancel_meetings(
            conn,
            tenant.id,
            [str(o.decision.dispatch_key) for o in not_sent if o.decision.channel == "calendar"],
        )
        live_ledger.restore_due(
            conn,
            [
                (
                    o.decision.lead_id,
                    o.not_before
                    or o.retry_at
                    or _next_chance(lead_of[o.decision.lead_id], tenant, now),
                    lead_of[o.decision.lead_id].last_contacted_at,
                )
                for o in not_sent
            ],
        )
        live_ledger.write_opt_outs(
            conn,
            tenant.id,
            [(o.decision.lead_id, str(o.decision.channel)) for o in outcomes if o.unreachable],
        )
        paused = [o for o in outcomes if o.pause_channel]
        if paused:
            live_ledger.pause_channels(
                conn,
                tenant.id,
                [str(o.decision.channel) for o in paused],
                str(paused[0].error_code),
                now,
            )
        live_ledger.record_decisions(conn, run_id, tenant.id, final, decided_at=now)
    return final


def run_live(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: str,
    batch_size: int,
    run_id: str,
    clock: Callable[[], datetime],
    runtime: LiveRuntime,
    remaining_s: Callable[[], float] | None = None,
) -> RunResult:
    """Decide, claim (committed), send and record one live batch; a known runId replays."""
    with conn.transaction():
        tenant, run = load_and_claim(conn, tenant_id, run_id, LIVE)
        if not run.claimed:
            return replay(conn, tenant, run_id, run.mode)
        leads.promote_due(conn, tenant_id, LIVE, aware(clock()), PROMOTE_LIMIT)
        due, changed = take_due(conn, tenant_id, batch_size, LIVE)
        leads.save_verdicts(conn, changed)
        if not due:
            return RunResult(run_id, tenant_id, False, [])

        leads.lock_tenant(conn, tenant_id, LIVE)
        now = aware(clock())
        usage = ledger.channel_usage(conn, tenant_id, now, LIVE)
        senders = live_ledger.load_senders(conn, tenant_id)
        gates = LiveGates(
            senders={channel: row.paused for channel, row in senders.items()},
            sandbox=runtime.sandbox,
            unsubscribe_ready=runtime.unsubscribe_ready,
            keys=live_ledger.key_states(
                conn, tenant_id, [lead.id for lead in due], now - KEY_LOOKBACK
            ),
            claims_left=runtime.capacity(None if remaining_s is None else remaining_s()),
        )
        slots = meeting_slots(conn, tenant_id, LIVE, due, now)
        decisions = decide_batch(due, tenant, usage, now, taken_slots=slots, gates=gates)
        sends = [d for d in decisions if d.action == "would_send"]
        attempts = live_ledger.claim(
            conn, run_id, tenant_id, sends, now=now, max_attempts=MAX_ATTEMPTS
        )
        # Under the tenant's lock every claim succeeds; a key taken meanwhile (another writer)
        # is someone else's send: this run never sends it.
        decisions = [
            d
            if d.action != "would_send" or d.dispatch_key in attempts
            else d._replace(
                action="skipped", reason="duplicate_intent", dispatch_key=None, meeting_at=None
            )
            for d in decisions
        ]
        by_lead = {lead.id: lead for lead in due}
        claims = [
            Claimed(d, by_lead[d.lead_id], attempts[str(d.dispatch_key)])
            for d in decisions
            if d.action == "would_send"
        ]
        live_ledger.book_meetings(
            conn,
            tenant_id,
            [
                (c.decision, c.decision.meeting_at + timedelta(minutes=tenant.meeting_minutes))
                for c in claims
                if c.decision.meeting_at is not None
            ],
        )
        live_ledger.record_decisions(
            conn,
            run_id,
            tenant_id,
            [d for d in decisions if d.action != "would_send"],
            decided_at=now,
        )
        ledger.count_sends(conn, tenant_id, [c.decision for c in claims], now, LIVE)
        leads.set_due(conn, LIVE, due_updates(decisions, due, tenant, now))
        templates = live_ledger.load_templates(conn, tenant_id) if claims else {}
    # Committed: the claims are durable before any provider hears of them.

    outcomes = send_all(
        claims,
        tenant=tenant,
        senders=senders,
        templates=templates,
        runtime=runtime,
        clock=clock,
        remaining_s=remaining_s,
    )
    final = iter(
        record_outcomes(
            conn,
            run_id=run_id,
            tenant=tenant,
            claims=claims,
            outcomes=outcomes,
            claimed_at=now,
            now=aware(clock()),
        )
    )
    decided = [next(final) if d.action == "would_send" else d for d in decisions]
    paused = tuple(sorted({str(o.decision.channel) for o in outcomes if o.pause_channel}))
    return RunResult(
        run_id,
        tenant_id,
        False,
        decided,
        leads=by_lead,
        paused_channels=paused,
        timezone=tenant.timezone,
    )
