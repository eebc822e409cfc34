"""Live senders: one small adapter per channel behind ``Sender.send(dispatch) -> SendResult``.

Not imported by the dry-run path: only a live run (issue "Live dispatch behind the flag") loads
them. Each adapter builds its request with a pure function, sends it with no retries below it,
and maps the provider's answer to ``sent``/``failed``/``unknown`` through a table that is data
(shared/STYLE.md). ``unknown`` means the outcome cannot be known (timeout, lost connection,
ambiguous answer): it is never resent automatically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from dry_run.meetings import Meeting as Meeting  # re-exported: a Dispatch carries one

SendStatus = Literal["sent", "failed", "unknown"]


@dataclass(frozen=True)
class Content:
    """A template's rendered content (message content is data per template name)."""

    subject: str | None = None
    body: str = ""
    # WhatsApp: the approved template's language code and its body parameters, in order.
    language: str | None = None
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dispatch:
    """One claimed send: everything an adapter needs, nothing it must look up."""

    dispatch_key: str
    tenant_id: str
    lead_id: str
    channel: Literal["whatsapp", "email", "calendar"]
    # None for a WhatsApp session message (inside the 24 h window): sent as `type: text`.
    template: str | None
    # E.164 phone (WhatsApp) or normalised email address.
    recipient: str
    # WhatsApp: the business phone number id; email and calendar: the verified From address.
    sender: str
    content: Content
    # WhatsApp: the tenant's secret ARN holding {"accessToken": "..."}; None for email.
    secret_arn: str | None = None
    # Email and calendar: the tenant's SES configuration set.
    configuration_set: str | None = None
    meeting: Meeting | None = None
    attempt: int = 1
    extra: dict[str, str] = field(default_factory=dict)


class SendResult(NamedTuple):
    """What the provider said, as the ledger records it."""

    status: SendStatus
    provider_message_id: str | None = None
    error_code: str | None = None
    retryable: bool | None = None
    # A permanent answer that the tenant's channel must stop (WhatsApp 131048/368/190).
    pause_channel: bool = False
    # A permanent answer that this lead cannot be reached on the channel (an opt_outs row).
    unreachable: bool = False
    detail: str | None = None


class Sender(Protocol):
    """One channel's adapter. No retries below it: a send is one provider call at most."""

    def send(self, dispatch: Dispatch) -> SendResult: ...
