"""How a provider's news moves a dispatch's ``delivery_status``: forward only; no I/O.

Meta and SES deliver events late, twice and out of order (a ``read`` can arrive before its
``delivered``), so a status is written only when it says more than the one already kept.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from inbound.exceptions import InvalidEventError
from inbound.whatsapp import StatusEvent

DeliveryStatus: TypeAlias = Literal[
    "accepted", "failed", "delivered", "read", "bounced", "complained"
]

# What each incoming word means as a delivery status. Meta's ``sent`` is "accepted by WhatsApp's
# servers"; SES's ``Bounce`` reaches this function only when permanent (inbound.ses decides).
INCOMING: dict[str, DeliveryStatus] = {
    "sent": "accepted",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "Delivery": "delivered",
    "Bounce": "bounced",
    "Complaint": "complained",
}

# One order for both channels; a dispatch only ever sees one channel's statuses.
# - `failed` outranks `accepted` (the send did not get through) but not `delivered` or `read`:
#   a message that reached the phone was delivered whatever a stray failure says.
# - `bounced` and `complained` are the last word on an email: a bounce can come after SES's
#   `Delivery` (the receiving server accepted, then refused), and a complaint always does.
RANK: dict[str, int] = {
    "accepted": 0,
    "failed": 1,
    "delivered": 2,
    "read": 3,
    "bounced": 4,
    "complained": 5,
}


def next_delivery_status(current: str | None, incoming: str) -> DeliveryStatus | None:
    """Return the dispatch's new ``delivery_status``, or None when the event changes nothing."""
    new = INCOMING.get(incoming)
    if new is None:
        raise InvalidEventError("status", f"unknown delivery event {incoming!r}")
    if current is None:
        return new
    if current not in RANK:
        raise InvalidEventError("delivery_status", f"unknown stored status {current!r}")
    return new if RANK[new] > RANK[current] else None


def resolves_unknown(dispatch_status: str, event: StatusEvent) -> bool:
    """Tell whether the event settles an ``unknown`` send: it then becomes ``sent``."""
    # Any status at all, `failed` included, proves Meta accepted the request we could not
    # confirm; the event reaches its row through `callback_data`, our dispatch key.
    return dispatch_status == "unknown" and event.callback_data is not None
