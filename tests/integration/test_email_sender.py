"""The SES email adapter against SES v2 on moto, botocore's Stubber, and a fake HTTP server.

moto checks the sending identity and keeps each raw message as SES received it; the Stubber
checks the request against the real SES v2 model and plays SES's error answers; the fake
server proves on a real socket that the client makes one attempt, whatever SES answers.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string
from email.message import EmailMessage
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from icalendar import Calendar
from moto import mock_aws
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

from dry_run.senders import Content, Dispatch, Meeting, SendResult
from dry_run.senders.email import SesSender, client_config, default_client_factory
from dry_run.unsubscribe import verify

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

pytestmark = pytest.mark.integration

REGION = "us-east-1"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
KEY = b"integration-signing-key-01234567"
BASE_URL = "https://abc123.lambda-url.us-east-1.on.aws/unsubscribe"
LEAD = "7b0d2c8e-1f1e-4c55-9b9e-0c8f1e2d3a4b"
DISPATCH_KEY = "3c" * 32
CONFIGURATION_SET = "tenant-test-001"


def make_dispatch(channel: str = "email", **changes: Any) -> Dispatch:
    fields: dict[str, Any] = {
        "dispatch_key": DISPATCH_KEY,
        "tenant_id": "test-001",
        "lead_id": LEAD,
        "channel": channel,
        "template": "meeting_v1",
        "recipient": "ana.souza@example.com",
        "sender": "vendas@acme.com.br",
        "content": Content(subject="Reunião com a ACME", body="Olá Ana,\naté amanhã."),
        "configuration_set": CONFIGURATION_SET,
        "meeting": Meeting(
            starts_at=datetime(2026, 11, 26, 10, 0, tzinfo=SAO_PAULO),
            ends_at=datetime(2026, 11, 26, 10, 30, tzinfo=SAO_PAULO),
            timezone="America/Sao_Paulo",
        )
        if channel == "calendar"
        else None,
    }
    fields.update(changes)
    return Dispatch(**fields)


def make_sender(client: Any) -> SesSender:
    return SesSender(
        lambda: client, unsubscribe_base_url=BASE_URL, signing_key=KEY, clock=lambda: NOW
    )


# --- SES v2 on moto --------------------------------------------------------------------------


@pytest.fixture
def ses(aws_env: None) -> Iterator[SESV2Client]:
    """moto's SES v2 with the tenant's domain verified and its configuration set."""
    with mock_aws():
        client = boto3.client("sesv2", region_name=REGION)
        client.create_email_identity(EmailIdentity="acme.com.br")
        client.create_configuration_set(ConfigurationSetName=CONFIGURATION_SET)
        yield client


def received(message_id: str | None) -> EmailMessage:
    """The raw message moto's SES kept under ``message_id``, parsed."""
    (raw,) = [
        sent.raw_data
        for sent in get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages
        if sent.id == message_id
    ]
    message = message_from_string(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def test_an_email_reaches_ses_raw_with_its_unsubscribe_headers(ses: SESV2Client) -> None:
    # GIVEN a verified sender WHEN an email is sent
    result = make_sender(ses).send(make_dispatch())

    # THEN SES accepted it, and the message SES holds has our headers
    assert result.status == "sent"
    message = received(result.provider_message_id)
    assert message["From"] == "vendas@acme.com.br"
    assert message["To"] == "ana.souza@example.com"
    assert message["Subject"] == "Reunião com a ACME"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = message["List-Unsubscribe"]
    assert link.startswith(f"<{BASE_URL}?token=")
    assert link.endswith(">")
    assert verify(link[1:-1].split("token=")[1], key=KEY) == ("test-001", LEAD, "email")


def test_an_invitation_reaches_ses_with_a_calendar_request(ses: SESV2Client) -> None:
    result = make_sender(ses).send(make_dispatch("calendar"))

    assert result.status == "sent"
    message = received(result.provider_message_id)
    (part,) = [part for part in message.walk() if part.get_content_type() == "text/calendar"]
    assert part.get_param("method") == "REQUEST"
    assert isinstance(part, EmailMessage)
    calendar = Calendar.from_ical(part.get_content())
    assert isinstance(calendar, Calendar)
    (event,) = calendar.events
    assert calendar["METHOD"] == "REQUEST"
    assert str(event["UID"]) == f"{DISPATCH_KEY}@acme.com.br"
    assert event.start == datetime(2026, 11, 26, 10, 0, tzinfo=SAO_PAULO)
    assert event["DTSTART"].params["TZID"] == "America/Sao_Paulo"
    assert str(event["ORGANIZER"]) == "mailto:vendas@acme.com.br"
    assert event["ATTENDEE"].params["RSVP"] == "TRUE"
    assert [tz.tz_name for tz in calendar.timezones] == ["America/Sao_Paulo"]


def test_an_unverified_sender_is_a_permanent_failure(ses: SESV2Client) -> None:
    result = make_sender(ses).send(make_dispatch(sender="vendas@not-verified.example"))

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "MessageRejected",
        False,
    )


# --- SES's answers, through botocore's Stubber -----------------------------------------------


@pytest.fixture
def stubbed(aws_env: None) -> Iterator[tuple[SESV2Client, Stubber]]:
    """A real SES v2 client whose answers come from a Stubber (nothing leaves the process)."""
    client = boto3.client("sesv2", region_name=REGION, config=client_config())
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def expected_request(dispatch: Dispatch) -> dict[str, Any]:
    return dict(make_sender(None).prepare(dispatch, NOW))


def test_the_request_matches_the_ses_v2_model_exactly(
    stubbed: tuple[SESV2Client, Stubber],
) -> None:
    # GIVEN SES expecting exactly these arguments (the Stubber also validates them)
    client, stubber = stubbed
    dispatch = make_dispatch("calendar")
    expected = expected_request(dispatch)
    assert expected["EmailTags"] == [
        {"Name": "dispatch_key", "Value": DISPATCH_KEY},
        {"Name": "tenant_id", "Value": "test-001"},
    ]
    assert expected["ConfigurationSetName"] == CONFIGURATION_SET
    stubber.add_response("send_email", {"MessageId": "0100-stub"}, expected)

    result = make_sender(client).send(dispatch)

    assert result == SendResult("sent", provider_message_id="0100-stub")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (
            "TooManyRequestsException",
            429,
            SendResult("failed", None, "TooManyRequestsException", True),
        ),
        ("MessageRejected", 400, SendResult("failed", None, "MessageRejected", False)),
        (
            "SendingPausedException",
            400,
            SendResult("failed", None, "SendingPausedException", False, pause_channel=True),
        ),
        ("InternalFailure", 500, SendResult("unknown", None, "InternalFailure")),
    ],
    ids=["throttled", "rejected", "paused", "server-error"],
)
def test_each_ses_error_answer_is_recorded(
    stubbed: tuple[SESV2Client, Stubber], code: str, status: int, expected: SendResult
) -> None:
    client, stubber = stubbed
    dispatch = make_dispatch()
    stubber.add_client_error(
        "send_email",
        service_error_code=code,
        service_message="Sending failed for ana.souza@example.com",
        http_status_code=status,
        expected_params=expected_request(dispatch),
    )

    result = make_sender(client).send(dispatch)

    assert result._replace(detail=None) == expected
    assert result.detail == "Sending failed for a***@example.com"


def test_the_default_client_never_retries_and_times_out_quickly(aws_env: None) -> None:
    client = default_client_factory()

    config: Any = client.meta.config  # botocore-stubs leave Config's options untyped
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3, 10)
    assert client.meta.service_model.service_name == "sesv2"
    assert client.meta.region_name == REGION


# --- one attempt on a real socket ------------------------------------------------------------


class FakeSesServer(ThreadingHTTPServer):
    """Answers every request with ``answer`` after ``delay`` seconds, or hangs up; counts them."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeSesHandler)
        self.bodies: list[dict[str, Any]] = []
        self.answer: tuple[int, str | None, dict[str, Any]] = (200, None, {"MessageId": "m-1"})
        self.delay = 0.0
        self.hang_up = False

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a read timeout) is expected here, not an error."""


class FakeSesHandler(BaseHTTPRequestHandler):
    server: FakeSesServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(json.loads(body))
        if self.server.hang_up:
            return  # HTTP/1.0: the connection closes with no answer at all
        time.sleep(self.server.delay)
        status, error_type, payload = self.server.answer
        data = json.dumps(payload).encode()
        self.send_response(status)
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[FakeSesServer]:
    fake = FakeSesServer()
    thread = threading.Thread(target=fake.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()
    thread.join(timeout=5)


def socket_client(url: str, read_timeout: float | None = None) -> Any:
    config = client_config()
    if read_timeout is not None:
        config = config.merge(Config(read_timeout=read_timeout))
    return boto3.client("sesv2", region_name=REGION, endpoint_url=url, config=config)


@pytest.mark.usefixtures("aws_env")
def test_an_accepted_send_went_over_the_wire_as_ses_expects(server: FakeSesServer) -> None:
    result = make_sender(socket_client(server.url)).send(make_dispatch())

    assert result == SendResult("sent", provider_message_id="m-1")
    (body,) = server.bodies
    assert body["EmailTags"] == [
        {"Name": "dispatch_key", "Value": DISPATCH_KEY},
        {"Name": "tenant_id", "Value": "test-001"},
    ]
    assert body["ConfigurationSetName"] == CONFIGURATION_SET
    raw = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert message_from_bytes(raw, policy=default)["List-Unsubscribe-Post"] == (
        "List-Unsubscribe=One-Click"
    )


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "TooManyRequestsException", ("failed", True)),
        (500, "InternalFailure", ("unknown", None)),
        (503, "ServiceUnavailable", ("unknown", None)),
    ],
)
def test_an_answer_botocore_would_retry_is_tried_once(
    server: FakeSesServer, status: int, error_type: str, expected: tuple[str, bool | None]
) -> None:
    # GIVEN answers that botocore's standard mode retries by default
    server.answer = (status, error_type, {"message": "slow down"})

    result = make_sender(socket_client(server.url)).send(make_dispatch())

    assert (result.status, result.retryable) == expected
    assert len(server.bodies) == 1


@pytest.mark.usefixtures("aws_env")
def test_a_read_timeout_is_unknown_and_not_retried(server: FakeSesServer) -> None:
    server.delay = 1.0

    result = make_sender(socket_client(server.url, read_timeout=0.2)).send(make_dispatch())

    assert (result.status, result.error_code) == ("unknown", "read_timeout")
    assert len(server.bodies) == 1


@pytest.mark.usefixtures("aws_env")
def test_a_connection_closed_without_an_answer_is_unknown(server: FakeSesServer) -> None:
    server.hang_up = True

    result = make_sender(socket_client(server.url)).send(make_dispatch())

    assert (result.status, result.error_code) == ("unknown", "connection_closed")
    assert len(server.bodies) == 1


@pytest.mark.usefixtures("aws_env")
def test_a_refused_connection_is_a_retryable_failure() -> None:
    # GIVEN a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = make_sender(socket_client(f"http://127.0.0.1:{port}")).send(make_dispatch())

    assert (result.status, result.error_code, result.retryable) == ("failed", "connect_error", True)
