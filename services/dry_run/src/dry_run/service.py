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
from dry_run.leads import DRY_RUN, DueUpdate
from dry_run.policy import Lead, decide_batch, is_suppressed, next_due
from dry_run.responses import RunResult

# How many waiting leads one run may make ready (see leads._PROMOTE).
PROMOTE_LIMIT = 5_000
# How many times a batch whose picked leads were partly suppressed is topped up (asking for
# twice as many each time: up to 255 times the missing count in all).
TOP_UP_ROUNDS = 8


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the clock must return timezone-aware datetimes")
    return moment


def _take_due(
    conn: psycopg.Connection[Any], tenant_id: str, batch_size: int
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
        picked = leads.pick_due_leads(conn, tenant_id, DRY_RUN, size, taken=seen)
        seen += [item.lead.id for item in picked]
        parked = [DueUpdate(item.lead.id, None) for item in picked if is_suppressed(item.lead)]
        for item in picked:
            if is_suppressed(item.lead) or len(due) == batch_size:
                continue
            checked = with_verdicts(item.lead, item.verdicts)
            due.append(checked.lead)
            if checked.changed is not None:
                changed.append((item.lead.id, checked.changed))
        leads.set_due(conn, DRY_RUN, parked)
        if len(due) == batch_size or len(picked) < size:
            break
        size = (batch_size - len(due)) * 2 ** (round_ + 1)
    return due, changed


def run_dry_run(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: str,
    batch_size: int,
    run_id: str,
    clock: Callable[[], datetime],
) -> RunResult:
    """Decide and record one batch in ONE transaction; a known runId replays, writing nothing.

    Bad input (unknown tenant, runId of another tenant) raises an InvalidEventError subclass
    after rolling back; infrastructure faults propagate with nothing committed.
    """
    with conn.transaction():
        tenant = leads.load_tenant(conn, tenant_id)
        if tenant is None:
            raise UnknownTenantError(
                "tenantId", f"tenantId: no tenant {tenant_id!r}; expected an existing tenant id"
            )
        claim = ledger.claim_run(conn, run_id, tenant_id, DRY_RUN)
        if claim.owner != tenant_id:
            raise RunIdConflictError(
                "runId",
                f"runId: {run_id!r} already belongs to another tenant's run; "
                "expected a new run id or the same tenantId",
            )
        if not claim.claimed:
            recorded = ledger.read_run(conn, tenant_id, run_id)
            return RunResult(run_id, tenant_id, True, recorded, replayed=True)

        picked_at = _aware(clock())
        leads.promote_due(conn, tenant_id, DRY_RUN, picked_at, PROMOTE_LIMIT)
        due, changed = _take_due(conn, tenant_id, batch_size)
        leads.save_verdicts(conn, changed)
        if not due:
            return RunResult(run_id, tenant_id, True, [])

        leads.lock_tenant(conn, tenant_id)
        now = _aware(clock())
        usage = ledger.channel_usage(conn, tenant_id, now)
        decisions = decide_batch(due, tenant, usage, now)
        ledger.record(conn, run_id, tenant_id, decisions, flag_enabled=False, decided_at=now)
        ledger.count_sends(conn, tenant_id, decisions, now)
        updates = [
            DueUpdate(
                decision.lead_id,
                *next_due(decision, lead, tenant, now),
                decision.dispatch_key,
                decision.local_date if decision.dispatch_key else None,
            )
            for decision, lead in zip(decisions, due, strict=True)
        ]
        leads.set_due(conn, DRY_RUN, updates)
    return RunResult(run_id, tenant_id, True, decisions, leads={lead.id: lead for lead in due})
