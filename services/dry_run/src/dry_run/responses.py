"""What an invocation answers: the response of shared/DOMAIN.md, built from a run's result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from dry_run.ledger import rejections_json
from dry_run.policy import Channel, Decision, Lead

# The order of the summary's byChannel, as in DOMAIN.md's example.
RESPONSE_CHANNELS: tuple[Channel, ...] = ("whatsapp", "email", "calendar")


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
        """Counts by action, sends by channel, and decisions by action and reason."""
        actions = Counter(decision.action for decision in self.decisions)
        by_channel = Counter(
            decision.channel for decision in self.decisions if decision.action == "would_send"
        )
        by_reason = Counter(f"{d.action}:{d.reason}" for d in self.decisions)
        return {
            "would_send": actions["would_send"],
            "skipped": actions["skipped"],
            "deferred": actions["deferred"],
            "byChannel": {channel: by_channel[channel] for channel in RESPONSE_CHANNELS},
            "byReason": dict(sorted(by_reason.items())),
        }

    def decisions_json(self) -> list[dict[str, Any]]:
        """The decisions as they appear in the response."""
        return [decision_json(decision) for decision in self.decisions]

    def to_response(self, decisions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The invocation's response, as shared/DOMAIN.md defines it.

        ``decisions``: ``decisions_json()`` when the caller already built it.
        """
        return {
            "runId": self.run_id,
            "tenantId": self.tenant_id,
            "dryRun": self.dry_run,
            "decisions": self.decisions_json() if decisions is None else decisions,
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
        "details": rejections_json(decision.details),
    }
