"""Meta's webhook payloads, shaped as Meta documents them, read into typed events."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from inbound.exceptions import InvalidEventError
from inbound.whatsapp import (
    ErrorEvent,
    MessageEvent,
    PreferenceEvent,
    StatusEvent,
    parse_webhook,
)

PHONE_NUMBER_ID = "106540352242922"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MDVCRDA0MTFFNjQ2MUQ2NjEA"
LEAD_WA_ID = "5511987654321"
CALLBACK = "dk_7f3a9c"


def webhook(value: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    """Wrap a change value in Meta's envelope."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "5511912345678",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            **value,
                        },
                        "field": field,
                    }
                ],
            }
        ],
    }


def status(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": WAMID,
        "status": name,
        "timestamp": "1749416383",
        "recipient_id": LEAD_WA_ID,
        "biz_opaque_callback_data": CALLBACK,
        "conversation": {"id": "c1", "origin": {"type": "marketing"}},
        "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing"},
        **extra,
    }


def text_message(body: str) -> dict[str, Any]:
    return {
        "contacts": [{"profile": {"name": "Maria"}, "wa_id": LEAD_WA_ID}],
        "messages": [
            {
                "from": LEAD_WA_ID,
                "id": "wamid.inbound1",
                "timestamp": "1749416400",
                "type": "text",
                "text": {"body": body},
            }
        ],
    }


@pytest.mark.parametrize("name", ["sent", "delivered", "read"])
def test_a_status_is_read_with_its_callback_data(name: str) -> None:
    # GIVEN a status webhook for a message we sent with biz_opaque_callback_data
    payload = webhook({"statuses": [status(name)]})
    # WHEN it is parsed
    events = parse_webhook(payload)
    # THEN it is one status event naming the message, the lead and our dispatch key
    assert events == [
        StatusEvent(
            phone_number_id=PHONE_NUMBER_ID,
            wamid=WAMID,
            status=name,  # type: ignore[arg-type]
            timestamp=datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC),
            recipient_id=LEAD_WA_ID,
            callback_data=CALLBACK,
            error_codes=(),
        )
    ]


def test_a_failed_status_keeps_its_error_codes() -> None:
    # GIVEN a failed status with Meta's errors array
    failed = status(
        "failed",
        errors=[
            {
                "code": 131026,
                "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "Message Undeliverable."},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ],
    )
    del failed["conversation"], failed["pricing"]
    # WHEN it is parsed
    [event] = parse_webhook(webhook({"statuses": [failed]}))
    # THEN the status is failed and the code is kept
    assert isinstance(event, StatusEvent)
    assert event.status == "failed"
    assert event.error_codes == (131026,)


def test_a_status_without_callback_data_has_none() -> None:
    # GIVEN a status for a message sent without biz_opaque_callback_data
    plain = status("delivered")
    del plain["biz_opaque_callback_data"]
    # WHEN it is parsed THEN its callback data is None
    [event] = parse_webhook(webhook({"statuses": [plain]}))
    assert isinstance(event, StatusEvent)
    assert event.callback_data is None


def test_a_status_that_says_nothing_about_delivery_is_skipped() -> None:
    # GIVEN a `deleted` status next to a `read` one
    payload = webhook({"statuses": [status("deleted"), status("read")]})
    # WHEN it is parsed THEN only the read status is an event
    assert [event.status for event in parse_webhook(payload)] == ["read"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "opt_out"),
    [
        ("Parar", True),
        (" parar ", True),
        ("DESCADASTRAR", True),
        ("cancelár", True),
        ("Não quero parar de receber as ofertas", False),
    ],
)
def test_a_text_message_is_read_with_its_opt_out_meaning(body: str, opt_out: bool) -> None:
    # GIVEN a lead's text message
    payload = webhook(text_message(body))
    # WHEN it is parsed
    events = parse_webhook(payload)
    # THEN it names the lead in E.164, the text, and whether it opts out
    assert events == [
        MessageEvent(
            phone_number_id=PHONE_NUMBER_ID,
            message_id="wamid.inbound1",
            from_phone="+5511987654321",
            timestamp=datetime(2025, 6, 8, 21, 0, 0, tzinfo=UTC),
            text=body,
            is_opt_out=opt_out,
        )
    ]


def test_an_interactive_reply_has_no_text_and_does_not_opt_out() -> None:
    # GIVEN a button reply whose title is a keyword (it is not a typed message)
    value = text_message("unused")
    message = value["messages"][0]
    del message["text"]
    message["type"] = "interactive"
    message["interactive"] = {
        "type": "button_reply",
        "button_reply": {"id": "stop-button", "title": "PARAR"},
    }
    # WHEN it is parsed
    [event] = parse_webhook(webhook(value))
    # THEN it still counts as an inbound message, with no text and no opt-out
    assert isinstance(event, MessageEvent)
    assert event.text is None
    assert event.is_opt_out is False


@pytest.mark.parametrize(("choice", "stop"), [("stop", True), ("resume", False)])
def test_a_marketing_preference_change_is_read(choice: str, stop: bool) -> None:
    # GIVEN a user_preferences webhook as Meta documents it
    payload = webhook(
        {
            "contacts": [{"profile": {"name": "Maria"}, "wa_id": LEAD_WA_ID}],
            "user_preferences": [
                {
                    "wa_id": LEAD_WA_ID,
                    "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages",
                    "value": choice,
                    "timestamp": 1731705721,
                }
            ],
        },
        field="user_preferences",
    )
    # WHEN it is parsed THEN it is one preference event
    assert parse_webhook(payload) == [PreferenceEvent(PHONE_NUMBER_ID, LEAD_WA_ID, stop)]


def test_a_preference_of_another_category_is_skipped() -> None:
    # GIVEN a preference change for a category the agent does not send
    payload = webhook(
        {"user_preferences": [{"wa_id": LEAD_WA_ID, "category": "other", "value": "stop"}]},
        field="user_preferences",
    )
    # WHEN it is parsed THEN there is no event
    assert parse_webhook(payload) == []


def test_value_level_errors_are_one_error_event() -> None:
    # GIVEN errors Meta reports for the business number itself
    payload = webhook(
        {
            "errors": [
                {"code": 131048, "title": "Spam rate limit hit", "message": "..."},
                {"code": 368, "title": "Temporarily blocked for policies violations"},
            ]
        }
    )
    # WHEN it is parsed THEN one error event carries both codes
    assert parse_webhook(payload) == [ErrorEvent(PHONE_NUMBER_ID, (131048, 368))]


def test_unknown_fields_and_change_kinds_are_ignored() -> None:
    # GIVEN a status with fields Meta may add, and a change kind this service does not read
    payload = webhook({"statuses": [status("read", new_field={"x": 1})], "novelty": [1]})
    payload["entry"][0]["changes"].insert(
        0, {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
    )
    payload["entry"][0]["unexpected"] = True
    # WHEN it is parsed THEN the read status alone comes out
    [event] = parse_webhook(payload)
    assert isinstance(event, StatusEvent)
    assert event.status == "read"


def test_several_entries_and_changes_keep_their_order() -> None:
    # GIVEN a payload with a status change and then a message change in two entries
    first = webhook({"statuses": [status("delivered")]})
    second = webhook(text_message("oi"))
    first["entry"].append(second["entry"][0])
    # WHEN it is parsed THEN the events come out in Meta's order
    assert [type(event) for event in parse_webhook(first)] == [StatusEvent, MessageEvent]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda p: p["entry"][0]["changes"][0]["value"]["statuses"][0].update(
                timestamp="yesterday"
            ),
            "entry[0].changes[0].value.statuses[0].timestamp: expected a Unix time string, "
            "got 'yesterday'",
        ),
        (
            lambda p: p["entry"][0]["changes"][0]["value"]["statuses"][0].pop("id"),
            "entry[0].changes[0].value.statuses[0].id: expected a non-empty string, got None",
        ),
        (
            lambda p: p["entry"][0]["changes"][0]["value"].pop("metadata"),
            "entry[0].changes[0].value.metadata: expected an object, got nothing",
        ),
        (
            lambda p: p["entry"][0]["changes"][0]["value"]["statuses"][0].update(
                errors=[{"code": "131026"}]
            ),
            "entry[0].changes[0].value.statuses[0].errors[0].code: expected an integer, "
            "got '131026'",
        ),
        (
            lambda p: p["entry"][0].update(changes={"field": "messages"}),
            "entry[0].changes: expected a list, got dict",
        ),
        (lambda p: p.pop("entry"), "entry: expected a list, got nothing"),
        (
            lambda p: p.update(object="page"),
            "object: expected 'whatsapp_business_account', got 'page'",
        ),
    ],
    ids=["timestamp", "id", "metadata", "error-code", "changes", "entry", "object"],
)
def test_a_broken_payload_raises_one_line_naming_the_path(break_it: Any, message: str) -> None:
    # GIVEN a status payload broken in one place
    payload = copy.deepcopy(webhook({"statuses": [status("read")]}))
    break_it(payload)
    # WHEN it is parsed THEN one line names the path and what was expected
    with pytest.raises(InvalidEventError) as caught:
        parse_webhook(payload)
    assert str(caught.value) == message


def test_a_message_from_a_non_numeric_sender_is_refused() -> None:
    # GIVEN a message whose sender is not digits
    value = text_message("oi")
    value["messages"][0]["from"] = "+55 11 98765"
    # WHEN it is parsed THEN the path names the sender
    with pytest.raises(
        InvalidEventError, match=r"^entry\[0\]\.changes\[0\]\.value\.messages\[0\]\.from: "
    ):
        parse_webhook(webhook(value))
