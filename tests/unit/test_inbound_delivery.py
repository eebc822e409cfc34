"""The monotonic delivery-status rule, every transition, and unknown sends resolved."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inbound.delivery import next_delivery_status, resolves_unknown
from inbound.exceptions import InvalidEventError
from inbound.whatsapp import StatusEvent

# (stored delivery_status, incoming event word, expected new status or None for no change)
TRANSITIONS = [
    # Nothing stored yet: the event's meaning is written.
    (None, "sent", "accepted"),
    (None, "delivered", "delivered"),
    (None, "read", "read"),
    (None, "failed", "failed"),
    (None, "Delivery", "delivered"),
    (None, "Bounce", "bounced"),
    (None, "Complaint", "complained"),
    # WhatsApp moves forward only: accepted < delivered < read.
    ("accepted", "sent", None),
    ("accepted", "delivered", "delivered"),
    ("accepted", "read", "read"),
    ("accepted", "failed", "failed"),
    ("delivered", "sent", None),
    ("delivered", "delivered", None),
    ("delivered", "read", "read"),
    ("delivered", "failed", None),
    ("read", "sent", None),
    ("read", "delivered", None),
    ("read", "read", None),
    ("read", "failed", None),
    # A failure is overruled only by proof that the message reached the phone.
    ("failed", "sent", None),
    ("failed", "failed", None),
    ("failed", "delivered", "delivered"),
    ("failed", "read", "read"),
    # Email: a permanent bounce or a complaint is the last word.
    ("accepted", "Delivery", "delivered"),
    ("delivered", "Delivery", None),
    ("accepted", "Bounce", "bounced"),
    ("delivered", "Bounce", "bounced"),
    ("delivered", "Complaint", "complained"),
    ("bounced", "Delivery", None),
    ("bounced", "Bounce", None),
    ("bounced", "Complaint", "complained"),
    ("complained", "Delivery", None),
    ("complained", "Bounce", None),
    ("complained", "Complaint", None),
]


@pytest.mark.parametrize(("current", "incoming", "expected"), TRANSITIONS)
def test_delivery_status_moves_forward_only(
    current: str | None, incoming: str, expected: str | None
) -> None:
    # GIVEN a dispatch's stored delivery status and an incoming provider event
    # WHEN the rule is applied THEN the status moves forward or stays
    assert next_delivery_status(current, incoming) == expected


def test_read_before_delivered_stays_read() -> None:
    # GIVEN Meta's events arriving out of order: read, then delivered
    after_read = next_delivery_status("accepted", "read")
    # WHEN the late delivered arrives THEN nothing changes
    assert after_read == "read"
    assert next_delivery_status(after_read, "delivered") is None


def test_an_unknown_incoming_word_is_refused() -> None:
    # GIVEN an event word the rule does not know WHEN applied THEN it is refused
    with pytest.raises(InvalidEventError, match="unknown delivery event 'Open'"):
        next_delivery_status("delivered", "Open")


def test_an_unknown_stored_status_is_refused() -> None:
    # GIVEN a stored value outside the table's vocabulary WHEN applied THEN it is refused
    with pytest.raises(InvalidEventError, match="unknown stored status 'sent'"):
        next_delivery_status("sent", "read")


def status_event(name: str, callback_data: str | None = "dk_1") -> StatusEvent:
    return StatusEvent(
        phone_number_id="106540352242922",
        wamid="wamid.X",
        status=name,  # type: ignore[arg-type]
        timestamp=datetime(2026, 1, 5, 12, tzinfo=UTC),
        recipient_id="5511987654321",
        callback_data=callback_data,
        error_codes=(131026,) if name == "failed" else (),
    )


@pytest.mark.parametrize("name", ["sent", "delivered", "read", "failed"])
def test_any_status_event_resolves_an_unknown_send(name: str) -> None:
    # GIVEN a dispatch whose send ended `unknown` and a status event carrying its key
    # WHEN the rule is asked THEN the send is resolved (Meta accepted it)
    assert resolves_unknown("unknown", status_event(name)) is True


@pytest.mark.parametrize("dispatch_status", ["sent", "failed"])
def test_a_settled_send_is_not_resolved_again(dispatch_status: str) -> None:
    # GIVEN a dispatch already sent or failed WHEN a status arrives THEN nothing is resolved
    assert resolves_unknown(dispatch_status, status_event("delivered")) is False


def test_a_status_without_callback_data_cannot_resolve_an_unknown_send() -> None:
    # GIVEN a status event with no dispatch key to tie it to the unknown row
    # WHEN the rule is asked THEN it does not resolve it
    assert resolves_unknown("unknown", status_event("delivered", callback_data=None)) is False
