"""SES event-publishing records inside SNS notifications, shaped as AWS documents them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inbound.delivery import next_delivery_status
from inbound.exceptions import InvalidEventError
from inbound.ses import SesEvent, delivery_event, opt_out_source, parse_sns_record

SES_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
SNS_MESSAGE_ID = "95df01b4-ee98-5cb9-9903-4c221d41eb5e"

MAIL = {
    "timestamp": "2017-08-05T00:40:02.012Z",
    "source": "Sender Name <sender@example.com>",
    "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
    "sendingAccountId": "123456789012",
    "messageId": SES_MESSAGE_ID,
    "destination": ["recipient@example.com"],
    "headersTruncated": False,
    "tags": {"ses:configuration-set": ["ConfigSet"]},
}


def bounce(bounce_type: str, sub_type: str = "General") -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": [
                {
                    "emailAddress": "recipient@example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2017-08-05T00:41:02.669Z",
            "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
            "reportingMTA": "dsn; mta.example.com",
        },
        "mail": MAIL,
    }


COMPLAINT = {
    "eventType": "Complaint",
    "complaint": {
        "complainedRecipients": [{"emailAddress": "recipient@example.com"}],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "userAgent": "Mozilla/5.0",
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2017-08-05T00:41:02.669Z",
    },
    "mail": MAIL,
}

DELIVERY = {
    "eventType": "Delivery",
    "mail": MAIL,
    "delivery": {
        "timestamp": "2016-10-19T23:21:04.133Z",
        "processingTimeMillis": 11893,
        "recipients": ["recipient@example.com"],
        "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "mta.example.com",
    },
}


def lambda_record(message: dict[str, Any]) -> dict[str, Any]:
    """An SNS record as Lambda receives it, the SES record JSON-encoded in Sns.Message."""
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:ses-events:sub",
        "Sns": {
            "Type": "Notification",
            "MessageId": SNS_MESSAGE_ID,
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
            "Subject": None,
            "Message": json.dumps(message),
            "Timestamp": "2017-08-05T00:41:03.000Z",
            "SignatureVersion": "1",
            "MessageAttributes": {},
        },
    }


def test_a_permanent_bounce_opts_the_email_out() -> None:
    # GIVEN a permanent bounce record
    # WHEN it is parsed
    event = parse_sns_record(lambda_record(bounce("Permanent")))
    # THEN it names the SES message, the bounced address, and writes a `bounce` opt-out
    assert event == SesEvent(
        sns_message_id=SNS_MESSAGE_ID,
        message_id=SES_MESSAGE_ID,
        event_type="Bounce",
        bounce_type="Permanent",
        permanent_bounce=True,
        recipients=("recipient@example.com",),
    )
    assert opt_out_source(event) == "bounce"
    assert delivery_event(event) == "Bounce"
    assert next_delivery_status("delivered", "Bounce") == "bounced"


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_a_bounce_that_is_not_permanent_changes_nothing(bounce_type: str) -> None:
    # GIVEN a soft bounce (the mailbox is full, or SES cannot tell)
    event = parse_sns_record(lambda_record(bounce(bounce_type, "MailboxFull")))
    # WHEN its meaning is asked THEN it neither opts out nor moves the delivery status
    assert event.permanent_bounce is False
    assert opt_out_source(event) is None
    assert delivery_event(event) is None


def test_a_complaint_opts_the_email_out() -> None:
    # GIVEN a complaint record WHEN it is parsed
    event = parse_sns_record(lambda_record(COMPLAINT))
    # THEN it writes a `complaint` opt-out and marks the dispatch complained
    assert event.event_type == "Complaint"
    assert event.recipients == ("recipient@example.com",)
    assert opt_out_source(event) == "complaint"
    assert next_delivery_status("delivered", delivery_event(event) or "") == "complained"


def test_a_delivery_marks_the_dispatch_delivered() -> None:
    # GIVEN a delivery record WHEN it is parsed
    event = parse_sns_record(lambda_record(DELIVERY))
    # THEN it opts nobody out and moves the dispatch to delivered
    assert event.message_id == SES_MESSAGE_ID
    assert opt_out_source(event) is None
    assert next_delivery_status("accepted", delivery_event(event) or "") == "delivered"


@pytest.mark.parametrize("event_type", ["Send", "Reject", "DeliveryDelay", "Open"])
def test_other_events_change_nothing(event_type: str) -> None:
    # GIVEN an event the agent only counts
    event = parse_sns_record(lambda_record({"eventType": event_type, "mail": MAIL}))
    # WHEN its meaning is asked THEN there is none
    assert opt_out_source(event) is None
    assert delivery_event(event) is None


def test_an_http_notification_and_a_feedback_notification_are_read_too() -> None:
    # GIVEN an SNS HTTP body (no "Sns" wrapper) carrying identity feedback (notificationType)
    message = bounce("Permanent")
    message["notificationType"] = message.pop("eventType")
    notification = lambda_record(message)["Sns"]
    # WHEN it is parsed THEN it reads as the same permanent bounce
    event = parse_sns_record(notification)
    assert (event.sns_message_id, event.event_type, event.permanent_bounce) == (
        SNS_MESSAGE_ID,
        "Bounce",
        True,
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"Sns": {"MessageId": SNS_MESSAGE_ID, "Message": "{not json"}},
            r"^Sns\.Message: expected a JSON SES record",
        ),
        (
            lambda_record({"eventType": "Bounce", "mail": {"messageId": SES_MESSAGE_ID}}),
            r"^Sns\.Message\.bounce: expected an object, got nothing$",
        ),
        (
            lambda_record({"eventType": "Delivery", "mail": {}}),
            r"^Sns\.Message\.mail\.messageId: expected a non-empty string, got None$",
        ),
        (
            lambda_record({"mail": MAIL}),
            r"^Sns\.Message\.eventType: expected a non-empty string, got None$",
        ),
        ({"Sns": {"Message": "{}"}}, r"^Sns\.MessageId: expected a non-empty string"),
    ],
    ids=["not-json", "bounce-missing", "message-id-missing", "type-missing", "sns-id-missing"],
)
def test_a_broken_record_raises_one_line_naming_the_path(
    record: dict[str, Any], message: str
) -> None:
    # GIVEN an SNS record broken in one place
    # WHEN it is parsed THEN one line names the path
    with pytest.raises(InvalidEventError, match=message) as caught:
        parse_sns_record(record)
    assert "\n" not in str(caught.value)
