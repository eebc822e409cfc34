"""What an invocation answers: the response of shared/DOMAIN.md, built from a run's result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

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
    # Live: the channels a provider's answer paused during this run.
    paused_channels: tuple[str, ...] = ()
    # The tenant's zone: meetingAt carries its UTC offset.
    timezone: str | None = None

    def summary(self) -> dict[str, Any]:
        """Counts by action, sends by channel, and decisions by action and reason.

        A dry run counts ``would_send``; a live run ``sent``, ``failed`` and ``unknown``, with
        ``byChannel`` counting what was sent (DOMAIN.md, "The invocation").
        """
        actions: Counter[str] = Counter(decision.action for decision in self.decisions)
        sent = "would_send" if self.dry_run else "sent"
        by_channel = Counter(
            decision.channel for decision in self.decisions if decision.action == sent
        )
        by_reason = Counter(f"{d.action}:{d.reason}" for d in self.decisions)
        counts = ("would_send",) if self.dry_run else ("sent", "failed", "unknown")
        return {
            **{action: actions[action] for action in counts},
            "skipped": actions["skipped"],
            "deferred": actions["deferred"],
            "byChannel": {channel: by_channel[channel] for channel in RESPONSE_CHANNELS},
            "byReason": dict(sorted(by_reason.items())),
        }

    def decisions_json(self) -> list[dict[str, Any]]:
        """The decisions as they appear in the response."""
        zone = ZoneInfo(self.timezone) if self.timezone else None
        return [decision_json(decision, zone) for decision in self.decisions]

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


def decision_json(decision: Decision, zone: ZoneInfo | None = None) -> dict[str, Any]:
    """One decision as it appears in the response (a live send adds the provider's answer)."""
    as_json = {
        "leadId": decision.lead_id,
        "channel": decision.channel,
        "action": decision.action,
        "reason": decision.reason,
        "template": decision.template,
        "dispatchKey": decision.dispatch_key,
        "notBefore": (
            decision.not_before.astimezone(UTC).isoformat() if decision.not_before else None
        ),
        "meetingAt": meeting_at_iso(decision.meeting_at, zone),
        "details": rejections_json(decision.details),
    }
    if decision.provider_message_id is not None:
        as_json["providerMessageId"] = decision.provider_message_id
    if decision.error_code is not None:
        as_json["errorCode"] = decision.error_code
    return as_json


def meeting_at_iso(moment: datetime | None, zone: ZoneInfo | None = None) -> str | None:
    """A meeting's start as ISO 8601 with the tenant's UTC offset (``zone``, else its own)."""
    if moment is None:
        return None
    return (moment.astimezone(zone) if zone else moment).isoformat(timespec="seconds")
