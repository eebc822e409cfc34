"""The use case: one invocation, one transaction, from due leads to recorded decisions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from dry_run import leads, ledger
from dry_run.events import InvalidEventError
from dry_run.policy import Decision, Lead, decide_batch


class UnknownTenantError(InvalidEventError):
    """The event names a tenant that does not exist."""

    error_type = "UnknownTenant"


class RunIdConflictError(InvalidEventError):
    """The runId was already used for another tenant."""

    error_type = "RunIdConflict"


@dataclass(frozen=True)
class RunResult:
    """What one invocation decided (or, for a replayed runId, had decided)."""

    run_id: str
    tenant_id: str
    dry_run: bool
    decisions: list[Decision]
    replayed: bool = False
    leads: dict[str, Lead] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        actions = Counter(decision.action for decision in self.decisions)
        by_channel = Counter(
            decision.channel for decision in self.decisions if decision.action == "would_send"
        )
        by_reason = Counter(f"{d.action}:{d.reason}" for d in self.decisions)
        return {
            "would_send": actions["would_send"],
            "skipped": actions["skipped"],
            "deferred": actions["deferred"],
            "byChannel": {
                channel: by_channel[channel] for channel in ("whatsapp", "email", "calendar")
            },
            "byReason": dict(sorted(by_reason.items())),
        }

    def to_response(self) -> dict[str, Any]:
        """The invocation's response, as shared/DOMAIN.md defines it."""
        return {
            "runId": self.run_id,
            "tenantId": self.tenant_id,
            "dryRun": self.dry_run,
            "decisions": [decision_json(decision) for decision in self.decisions],
            "summary": self.summary(),
        }


def decision_json(decision: Decision) -> dict[str, Any]:
    """One decision as it appears in the response."""
    return {
        "leadId": decision.lead_id,
        "channel": decision.channel,
        "action": decision.action,
        "reason": decision.reason,
        "template": decision.template,
        "dispatchKey": decision.dispatch_key,
        "notBefore": (
            decision.not_before.astimezone(UTC).isoformat() if decision.not_before else None
        ),
        "details": ledger.details_json(decision),
    }


def run_dry_run(
    conn: psycopg.Connection[Any],
    *,
    tenant_id: str,
    batch_size: int,
    run_id: str,
    now: datetime,
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
        leads.lock_tenant(conn, tenant_id)
        recorded_tenant, recorded = ledger.read_run(conn, run_id)
        if recorded_tenant is not None:
            if recorded_tenant != tenant_id:
                raise RunIdConflictError(
                    "runId",
                    f"runId: {run_id!r} was already used for another tenant; "
                    "expected a new run id or the same tenantId",
                )
            return RunResult(run_id, tenant_id, True, recorded, replayed=True)
        due = leads.take_due_leads(conn, tenant, batch_size, now)
        usage = ledger.channel_usage(conn, tenant_id, now)
        decisions = decide_batch(due, tenant, usage, now)
        ledger.record(conn, run_id, tenant_id, decisions, flag_enabled=False, decided_at=now)
    return RunResult(run_id, tenant_id, True, decisions, leads={lead.id: lead for lead in due})
