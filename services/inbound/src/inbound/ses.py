"""What an SES event-publishing record says, read from its SNS notification; no I/O.

SES publishes to an SNS topic; SNS hands the function a record whose ``Sns.Message`` is the SES
record as a JSON string: ``{"eventType": "Bounce", "mail": {"messageId": ...}, "bounce":
{"bounceType": "Permanent", ...}}``. Without event publishing (identity feedback notifications)
the same record names its kind ``notificationType``; both are read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, TypeAlias

from inbound.exceptions import InvalidEventError

OptOutSource: TypeAlias = Literal["bounce", "complaint"]


class SesEvent(NamedTuple):
    """One SES event about one message we sent."""

    sns_message_id: str
    # SES's id for the email, kept as the dispatch's provider_message_id.
    message_id: str
    event_type: str
    bounce_type: str | None
    permanent_bounce: bool
    recipients: tuple[str, ...]


def parse_sns_record(record: Mapping[str, Any]) -> SesEvent:
    """Read the SES event inside one SNS record (a Lambda ``Records[]`` item or an HTTP body)."""
    # A Lambda SNS record wraps the notification in "Sns"; an HTTP delivery is the notification.
    notification_path = "Sns" if "Sns" in record else ""
    notification = _mapping(record.get("Sns", record), notification_path or "record")
    sns_message_id = _string(notification, "MessageId", notification_path)
    message_path = _join(notification_path, "Message")
    raw_message = _string(notification, "Message", notification_path)
    try:
        decoded = json.loads(raw_message)
    except json.JSONDecodeError as error:
        raise InvalidEventError(message_path, f"expected a JSON SES record ({error})") from error
    message = _mapping(decoded, message_path)
    event_type = message.get("eventType", message.get("notificationType"))
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError(
            f"{message_path}.eventType", f"expected a non-empty string, got {event_type!r}"
        )
    mail_path = f"{message_path}.mail"
    mail = _mapping(message.get("mail"), mail_path)
    bounce_type: str | None = None
    recipients: tuple[str, ...] = ()
    if event_type == "Bounce":
        bounce_path = f"{message_path}.bounce"
        bounce = _mapping(message.get("bounce"), bounce_path)
        bounce_type = _string(bounce, "bounceType", bounce_path)
        recipients = _addresses(bounce, "bouncedRecipients", bounce_path)
    elif event_type == "Complaint":
        complaint_path = f"{message_path}.complaint"
        complaint = _mapping(message.get("complaint"), complaint_path)
        recipients = _addresses(complaint, "complainedRecipients", complaint_path)
    return SesEvent(
        sns_message_id=sns_message_id,
        message_id=_string(mail, "messageId", mail_path),
        event_type=event_type,
        bounce_type=bounce_type,
        # Only a permanent bounce says the address is dead; Transient and Undetermined may pass.
        permanent_bounce=bounce_type == "Permanent",
        recipients=recipients,
    )


def opt_out_source(event: SesEvent) -> OptOutSource | None:
    """Return the ``opt_outs.source`` the event writes for email, or None when it writes none."""
    if event.event_type == "Bounce" and event.permanent_bounce:
        return "bounce"
    if event.event_type == "Complaint":
        return "complaint"
    return None


def delivery_event(event: SesEvent) -> str | None:
    """Return the word ``delivery.next_delivery_status`` takes for this event, or None."""
    # A transient bounce is only a metric: SES retried and gave up for now, the address lives.
    if event.event_type == "Bounce":
        return "Bounce" if event.permanent_bounce else None
    if event.event_type in ("Delivery", "Complaint"):
        return event.event_type
    return None


def _addresses(container: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    raw = container.get(key, [])
    if not isinstance(raw, list):
        raise InvalidEventError(f"{path}.{key}", f"expected a list, got {type(raw).__name__}")
    addresses: list[str] = []
    for index, item in enumerate(raw):
        item_path = f"{path}.{key}[{index}]"
        addresses.append(_string(_mapping(item, item_path), "emailAddress", item_path))
    return tuple(addresses)


def _mapping(raw: object, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        kind = "nothing" if raw is None else type(raw).__name__
        raise InvalidEventError(path, f"expected an object, got {kind}")
    return raw


def _string(container: Mapping[str, Any], key: str, path: str) -> str:
    raw = container.get(key)
    if not isinstance(raw, str) or not raw:
        raise InvalidEventError(_join(path, key), f"expected a non-empty string, got {raw!r}")
    return raw


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
