"""What a Meta (WhatsApp Cloud API) webhook says, as typed events; no I/O.

The payload is ``{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":
"messages", "value": {...}}]}]}``. A ``messages`` change carries ``statuses[]`` (what became of
our messages), ``messages[]`` (what leads wrote) and ``errors[]`` (problems with the business
number itself); a ``user_preferences`` change carries ``user_preferences[]`` (a lead stopped or
resumed marketing messages). Unknown fields and change kinds are skipped, because Meta adds them
without notice; a payload whose known parts have the wrong shape raises one line naming the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeAlias

from inbound.exceptions import InvalidEventError
from inbound.keywords import is_opt_out

WhatsAppStatus: TypeAlias = Literal["sent", "delivered", "read", "failed"]
WHATSAPP_STATUSES: dict[str, WhatsAppStatus] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
}
WEBHOOK_OBJECT = "whatsapp_business_account"
# The change kinds whose values this module reads; every other kind is skipped.
CHANGE_FIELDS = frozenset({"messages", "user_preferences"})
PREFERENCE_CATEGORY = "marketing_messages"


class StatusEvent(NamedTuple):
    """Meta's news about a message we sent."""

    phone_number_id: str
    wamid: str
    status: WhatsAppStatus
    timestamp: datetime
    recipient_id: str | None
    # Our dispatch key, echoed back; it is how an `unknown` send finds its row.
    callback_data: str | None
    error_codes: tuple[int, ...]


class MessageEvent(NamedTuple):
    """A message a lead wrote to a business number."""

    phone_number_id: str
    message_id: str
    from_phone: str
    timestamp: datetime
    text: str | None
    is_opt_out: bool


class PreferenceEvent(NamedTuple):
    """A lead stopped (``stop``) or resumed marketing messages in WhatsApp's own settings."""

    phone_number_id: str
    wa_id: str
    stop: bool


class ErrorEvent(NamedTuple):
    """Errors Meta reports for the business number as a whole, not for one message."""

    phone_number_id: str
    codes: tuple[int, ...]


Event: TypeAlias = StatusEvent | MessageEvent | PreferenceEvent | ErrorEvent


def parse_webhook(payload: Mapping[str, Any]) -> list[Event]:
    """Read every event of a Meta webhook payload, in the order Meta sent them."""
    if payload.get("object") != WEBHOOK_OBJECT:
        raise InvalidEventError(
            "object", f"expected {WEBHOOK_OBJECT!r}, got {payload.get('object')!r}"
        )
    events: list[Event] = []
    for entry_index, entry in enumerate(_list(payload, "entry", "")):
        entry_path = f"entry[{entry_index}]"
        entry_map = _mapping(entry, entry_path)
        for change_index, change in enumerate(_list(entry_map, "changes", entry_path)):
            change_path = f"{entry_path}.changes[{change_index}]"
            change_map = _mapping(change, change_path)
            if change_map.get("field") not in CHANGE_FIELDS:
                continue
            value_path = f"{change_path}.value"
            events.extend(_value_events(_mapping(change_map.get("value"), value_path), value_path))
    return events


def _value_events(value: Mapping[str, Any], path: str) -> list[Event]:
    metadata = _mapping(value.get("metadata"), f"{path}.metadata")
    phone_number_id = _string(metadata, "phone_number_id", f"{path}.metadata")
    events: list[Event] = []
    for index, status in enumerate(_optional_list(value, "statuses", path)):
        event = _status(status, phone_number_id, f"{path}.statuses[{index}]")
        if event is not None:
            events.append(event)
    for index, message in enumerate(_optional_list(value, "messages", path)):
        events.append(_message(message, phone_number_id, f"{path}.messages[{index}]"))
    for index, preference in enumerate(_optional_list(value, "user_preferences", path)):
        pref_event = _preference(preference, phone_number_id, f"{path}.user_preferences[{index}]")
        if pref_event is not None:
            events.append(pref_event)
    errors = _optional_list(value, "errors", path)
    if errors:
        events.append(ErrorEvent(phone_number_id, _error_codes(errors, f"{path}.errors")))
    return events


def _status(raw: object, phone_number_id: str, path: str) -> StatusEvent | None:
    status = _mapping(raw, path)
    name = WHATSAPP_STATUSES.get(_string(status, "status", path))
    # Meta has other statuses (``deleted``, ``warning``) that say nothing about delivery.
    if name is None:
        return None
    return StatusEvent(
        phone_number_id=phone_number_id,
        wamid=_string(status, "id", path),
        status=name,
        timestamp=_unix_time(status, path),
        recipient_id=_optional_string(status, "recipient_id", path),
        callback_data=_optional_string(status, "biz_opaque_callback_data", path),
        error_codes=_error_codes(_optional_list(status, "errors", path), f"{path}.errors"),
    )


def _message(raw: object, phone_number_id: str, path: str) -> MessageEvent:
    message = _mapping(raw, path)
    sender = _string(message, "from", path)
    if not sender.isdigit():
        raise InvalidEventError(f"{path}.from", f"expected the sender's digits, got {sender!r}")
    text: str | None = None
    if message.get("type") == "text":
        text = _string(_mapping(message.get("text"), f"{path}.text"), "body", f"{path}.text")
    return MessageEvent(
        phone_number_id=phone_number_id,
        message_id=_string(message, "id", path),
        # Meta sends the number without its "+"; the leads table keeps E.164.
        from_phone=f"+{sender}",
        timestamp=_unix_time(message, path),
        text=text,
        is_opt_out=text is not None and is_opt_out(text),
    )


def _preference(raw: object, phone_number_id: str, path: str) -> PreferenceEvent | None:
    preference = _mapping(raw, path)
    if preference.get("category") != PREFERENCE_CATEGORY:
        return None
    choice = _string(preference, "value", path)
    if choice not in ("stop", "resume"):
        raise InvalidEventError(f"{path}.value", f"expected 'stop' or 'resume', got {choice!r}")
    return PreferenceEvent(phone_number_id, _string(preference, "wa_id", path), choice == "stop")


def _error_codes(errors: Sequence[object], path: str) -> tuple[int, ...]:
    codes: list[int] = []
    for index, raw in enumerate(errors):
        error_path = f"{path}[{index}]"
        code = _mapping(raw, error_path).get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            raise InvalidEventError(f"{error_path}.code", f"expected an integer, got {code!r}")
        codes.append(code)
    return tuple(codes)


def _unix_time(container: Mapping[str, Any], path: str) -> datetime:
    raw = container.get("timestamp")
    # Meta sends seconds as a string ("1749416383"); some webhooks send a bare integer.
    if isinstance(raw, str) and raw.isdigit():
        seconds = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        seconds = raw
    else:
        raise InvalidEventError(f"{path}.timestamp", f"expected a Unix time string, got {raw!r}")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _mapping(raw: object, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidEventError(path or "payload", f"expected an object, got {_kind(raw)}")
    return raw


def _list(container: Mapping[str, Any], key: str, path: str) -> Sequence[object]:
    raw = container.get(key)
    if not isinstance(raw, list):
        raise InvalidEventError(_join(path, key), f"expected a list, got {_kind(raw)}")
    return raw


def _optional_list(container: Mapping[str, Any], key: str, path: str) -> Sequence[object]:
    return () if container.get(key) is None else _list(container, key, path)


def _string(container: Mapping[str, Any], key: str, path: str) -> str:
    raw = container.get(key)
    if not isinstance(raw, str) or not raw:
        raise InvalidEventError(_join(path, key), f"expected a non-empty string, got {raw!r}")
    return raw


def _optional_string(container: Mapping[str, Any], key: str, path: str) -> str | None:
    return None if container.get(key) is None else _string(container, key, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(raw: object) -> str:
    return "nothing" if raw is None else type(raw).__name__
