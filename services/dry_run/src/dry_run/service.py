"""The use case: one invocation, one transaction, from due leads to recorded decisions.

Overlapping runs for one tenant (a schedule, a retry, a person) must neither wait for each
other nor exceed a cap together, so the transaction has two parts:

1. unlocked: claim the runId, make ready the leads whose time has come, take the oldest
   ready ones ``FOR UPDATE SKIP LOCKED`` (an overlapping run takes the next ones instead of
   queueing), and judge any contact data that changed;
2. serialised per tenant by an advisory lock, and short: read the clock (after the lock, so
   that every send committed before it counts), count the caps, decide, record every decision
   with one COPY and set each lead's next due time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from dry_run import leads, ledger
from dry_run.contacts import Verdicts, with_verdicts
from dry_run.exceptions import RunIdConflictError, UnknownTenantError
from dry_run.leads import DRY_RUN, LIVE, DueUpdate, Mode
from dry_run.meetings import NOTICE
from dry_run.policy import (
    Decision,
    Lead,
    Tenant,
    decide_batch,
    is_suppressed,
    next_due,
    wants_meeting,
)
from dry_run.responses import RunResult

# How many waiting leads one run may make ready (see leads._PROMOTE).
PROMOTE_LIMIT = 5_000
# How many times a batch whose picked leads were partly suppressed is topped up (asking for
# twice as many each time: up to 255 times the missing count in all).
TOP_UP_ROUNDS = 8


def aware(moment: datetime) -> datetime:
    """The clock's reading, refused when naive."""
    if moment.tzinfo is None:
        raise ValueError("the clock must return timezone-aware datetimes")
    return moment


def take_due(
    conn: psycopg.Connection[Any], tenant_id: str, batch_size: int, mode: Mode = DRY_RUN
) -> tuple[list[Lead], list[tuple[str, Verdicts]]]:
    """The batch's due leads with their verdicts applied, and the verdicts that changed.

    A ready lead that turns out suppressed (opted out, excluded stage: the policy says which)
    is not due: it is parked until it changes, and the batch is topped up with the next ready
    leads. Each round asks for twice as many as are still missing, so a long run of suppressed
    leads is crossed in a few statements (each is parked once: later runs never meet it again);
    a ready lead read beyond the batch stays ready for the next run.
    """
    due: list[Lead] = []
    changed: list[tuple[str, Verdicts]] = []
    seen: list[str] = []
    size = batch_size
    for round_ in range(TOP_UP_ROUNDS):
        picked = leads.pick_due_leads(conn, tenant_id, mode, size, taken=seen)
        seen += [item.lead.id for item in picked]
        parked = [DueUpdate(item.lead.id, None) for item in picked if is_suppressed(item.lead)]
        for item in picked:
            if is_suppressed(item.lead) or len(due) == batch_size:
                continue
            checked = with_verdicts(item.lead, item.verdicts)
            due.append(checked.lead)
            if checked.changed is not None:
                changed.append((item.lead.id, checked.changed))
        leads.set_due(conn, mode, parked)
        if len(due) == batch_size or len(picked) < size:
            break
        size = (batch_size - len(due)) * 2 ** (round_ + 1)
    return due, changed


def load_and_claim(
    conn: psycopg.Connection[Any], tenant_id: str, run_id: str, mode: Mode
) -> tuple[Tenant, ledger.RunClaim]:
    """The tenant, and the claim of ``run_id`` for it; bad input raises, writing nothing."""
    tenant = leads.load_tenant(conn, tenant_id)
    if tenant is None:
        raise UnknownTenantError(
            "tenantId", f"tenantId: no tenant {tenant_id!r}; expected an existing tenant id"
        )
    claim = ledger.claim_run(conn, run_id, tenant_id, mode)
    if claim.owner != tenant_id:
        raise RunIdConflictError(
            "runId",
            f"runId: {run_id!r} already belongs to another tenant's run; "
            "expected a new run id or the same tenantId",
        )
    return tenant, claim


def replay(conn: psycopg.Connection[Any], tenant: Tenant, run_id: str, mode: Mode) -> RunResult:
    """What the tenant's run ``run_id`` recorded, in the mode it ran in; no provider is called."""
    if mode == LIVE:
        from dry_run import live_ledger  # noqa: PLC0415 - live code loads only for live runs

        recorded = live_ledger.read_run(conn, tenant.id, run_id)
    else:
        recorded = ledger.read_run(conn, tenant.id, run_id)
    return RunResult(
        run_id, tenant.id, mode != LIVE, recorded, replayed=True, timezone=tenant.timezone
    )


def meeting_slots(
    conn: psycopg.Connection[Any], tenant_id: str, mode: Mode, due: list[Lead], now: datetime
) -> list[datetime] | None:
    """The mode's taken meeting starts, when the batch may propose a meeting (else None)."""
    if not any(wants_meeting(lead) for lead in due):
        return None
    return ledger.taken_slots(conn, tenant_id, mode, now + NOTICE)


def due_updates(
    decisions: list[Decision], due: list[Lead], tenant: Tenant, now: datetime
) -> list[DueUpdate]:
    """Each decided lead's next due state, and its send's key when it was a send."""
    return [
        DueUpdate(
            decision.lead_id,
            *next_due(decision, lead, tenant, now),
            decision.dispatch_key,
            decision.local_date if decision.dispatch_key else None,
        )
        for decision, lead in zip(decisions, due, strict=True)
    ]


def run_invocation(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: str,
    batch_size: int,
    run_id: str,
    clock: Callable[[], datetime],
    dispatch_enabled: bool,
    live_runtime: Callable[[], Any] | None = None,
    remaining_s: Callable[[], float] | None = None,
) -> RunResult:
    """One invocation: live when the flag is on AND the tenant's mode is live, else a dry run.

    The tenant's mode is read only when the flag is on, so a dry run with the flag off costs
    nothing more; anything but exactly ``live`` means a dry run (fail closed).
    """
    if dispatch_enabled and live_runtime is not None and leads.tenant_mode(conn, tenant_id) == LIVE:
        from dry_run import live  # noqa: PLC0415 - the send path loads only for a live tenant

        return live.run_live(
            conn,
            tenant_id=tenant_id,
            batch_size=batch_size,
            run_id=run_id,
            clock=clock,
            runtime=live_runtime(),
            remaining_s=remaining_s,
        )
    return run_dry_run(
        conn,
        tenant_id=tenant_id,
        batch_size=batch_size,
        run_id=run_id,
        clock=clock,
        flag_enabled=dispatch_enabled,
    )


def run_dry_run(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: str,
    batch_size: int,
    run_id: str,
    clock: Callable[[], datetime],
    flag_enabled: bool = False,
) -> RunResult:
    """Decide and record one batch in ONE transaction; a known runId replays, writing nothing.

    Bad input (unknown tenant, runId of another tenant) raises an InvalidEventError subclass
    after rolling back; infrastructure faults propagate with nothing committed.
    """
    with conn.transaction():
        tenant, claim = load_and_claim(conn, tenant_id, run_id, DRY_RUN)
        if not claim.claimed:
            return replay(conn, tenant, run_id, claim.mode)

        picked_at = aware(clock())
        leads.promote_due(conn, tenant_id, DRY_RUN, picked_at, PROMOTE_LIMIT)
        due, changed = take_due(conn, tenant_id, batch_size)
        leads.save_verdicts(conn, changed)
        if not due:
            return RunResult(run_id, tenant_id, True, [])

        leads.lock_tenant(conn, tenant_id)
        now = aware(clock())
        usage = ledger.channel_usage(conn, tenant_id, now)
        slots = meeting_slots(conn, tenant_id, DRY_RUN, due, now)
        decisions = decide_batch(due, tenant, usage, now, taken_slots=slots)
        ledger.record(conn, run_id, tenant_id, decisions, flag_enabled=flag_enabled, decided_at=now)
        ledger.count_sends(conn, tenant_id, decisions, now)
        leads.set_due(conn, DRY_RUN, due_updates(decisions, due, tenant, now))
    return RunResult(
        run_id,
        tenant_id,
        True,
        decisions,
        leads={lead.id: lead for lead in due},
        timezone=tenant.timezone,
    )
