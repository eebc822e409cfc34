"""The SES email adapter's pure parts: the MIME message, the invitation, the request, the
unsubscribe tokens, the answer tables; and the adapter itself against a small fake client."""

from __future__ import annotations

import base64
import email
import email.policy
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
    SSLError,
)
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar, Event

from dry_run.senders import Content, Dispatch, Meeting, SendResult
from dry_run.senders.email import (
    CALENDAR_TYPE,
    ERRORS,
    ErrorRule,
    SesSender,
    build_invitation,
    build_message,
    build_request,
    map_error,
    map_transport_error,
    redact,
    sender_domain,
)
from dry_run.unsubscribe import (
    InvalidUnsubscribeTokenError,
    UnsubscribeClaim,
    sign,
    unsubscribe_url,
    verify,
)

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
# Wednesday 25 Nov 2026, 12:00 in São Paulo; the meeting is the next morning.
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SLOT = Meeting(
    starts_at=datetime(2026, 11, 26, 10, 0, tzinfo=SAO_PAULO),
    ends_at=datetime(2026, 11, 26, 10, 30, tzinfo=SAO_PAULO),
    timezone="America/Sao_Paulo",
)
KEY = b"unit-test-signing-key-0123456789"
LEAD = "7b0d2c8e-1f1e-4c55-9b9e-0c8f1e2d3a4b"
DISPATCH_KEY = "5f" * 32
BASE_URL = "https://abc123.lambda-url.us-east-1.on.aws/unsubscribe"
URL = f"{BASE_URL}?token=payload.mac"
DOMAIN = "acme.com.br"


def make_dispatch(channel: str = "email", **changes: Any) -> Dispatch:
    fields: dict[str, Any] = {
        "dispatch_key": DISPATCH_KEY,
        "tenant_id": "test-001",
        "lead_id": LEAD,
        "channel": channel,
        "template": "first_touch_v1" if channel == "email" else "meeting_v1",
        "recipient": "ana.souza@example.com",
        "sender": "vendas@acme.com.br",
        "content": Content(subject="Uma proposta para a sua equipe", body="Olá Ana,\nTudo bem?"),
        "configuration_set": "tenant-test-001",
        "meeting": SLOT if channel == "calendar" else None,
    }
    fields.update(changes)
    return Dispatch(**fields)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def calendar_of(message: EmailMessage) -> Calendar:
    (part,) = [part for part in message.walk() if part.get_content_type() == "text/calendar"]
    assert isinstance(part, EmailMessage)
    calendar = Calendar.from_ical(part.get_content())
    assert isinstance(calendar, Calendar)
    return calendar


def event_of(calendar: Calendar) -> Event:
    (event,) = calendar.events
    return event


# --- the email -------------------------------------------------------------------------------


def test_an_email_carries_exactly_the_expected_headers() -> None:
    # GIVEN an email dispatch WHEN its message is built
    raw = build_message(make_dispatch(), unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW)

    # THEN the headers read back exactly
    message = parse(raw)
    assert message["From"] == "vendas@acme.com.br"
    assert message["To"] == "ana.souza@example.com"
    assert message["Subject"] == "Uma proposta para a sua equipe"
    assert message["Message-ID"] == f"<{DISPATCH_KEY}@acme.com.br>"
    assert message["Date"] == "Wed, 25 Nov 2026 15:00:00 +0000"
    assert message["List-Unsubscribe"] == f"<{URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().splitlines() == ["Olá Ana,", "Tudo bem?"]


def test_the_raw_message_is_7bit_with_crlf_line_ends() -> None:
    dispatch = make_dispatch("calendar", content=Content(subject="Reunião às 10h", body="Olá!"))

    raw = build_message(dispatch, unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW)

    assert raw.isascii()
    lines = raw.split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    assert max(map(len, lines)) <= 998


def test_a_long_unsubscribe_url_stays_on_one_line_unencoded() -> None:
    # GIVEN a real-length URL (a token is ~160 characters)
    token = sign("test-001", LEAD, "email", key=KEY, issued_at=1_795_000_000)
    url = unsubscribe_url(BASE_URL, token)

    raw = build_message(make_dispatch(), unsubscribe_url=url, sender_domain=DOMAIN, dtstamp=NOW)

    # THEN the header line is written as is (the library would fold it into encoded-words)
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in raw
    assert b"=?utf-8?" not in raw.split(b"\r\nList-Unsubscribe:")[1].split(b"\r\n")[0]


def test_a_non_ascii_subject_is_encoded_and_reads_back() -> None:
    subject = "Reunião com a ACME — amanhã às 10h, confirmação necessária para a agenda"
    dispatch = make_dispatch(content=Content(subject=subject, body="Até já"))

    raw = build_message(dispatch, unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW)

    assert b"=?utf-8?" in raw
    assert parse(raw)["Subject"] == subject


def test_the_same_dispatch_always_makes_the_same_bytes() -> None:
    for channel in ("email", "calendar"):
        dispatch = make_dispatch(channel)
        first = build_message(dispatch, unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW)
        again = build_message(dispatch, unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW)
        assert first == again


@pytest.mark.parametrize(
    ("changes", "url", "dtstamp"),
    [
        ({"channel": "whatsapp"}, URL, NOW),
        ({"content": Content(subject=None, body="x")}, URL, NOW),
        ({"content": Content(subject="  ", body="x")}, URL, NOW),
        ({"content": Content(subject="Oi\r\nBcc: all@example.com", body="x")}, URL, NOW),
        ({"dispatch_key": "not a key"}, URL, NOW),
        ({"recipient": "joão@example.com"}, URL, NOW),
        ({"recipient": "ana@example.com, bob@example.com"}, URL, NOW),
        ({"sender": "vendas"}, URL, NOW),
        ({"channel": "calendar", "meeting": None}, URL, NOW),
        ({}, "https://x.example/u?t=<a>", NOW),
        ({}, "https://x.example/" + "u" * 1000, NOW),
        ({"channel": "calendar"}, URL, NOW.replace(tzinfo=None)),
    ],
    ids=[
        "not-an-email-channel",
        "no-subject",
        "blank-subject",
        "header-injection",
        "bad-key",
        "non-ascii-recipient",
        "two-recipients",
        "sender-without-domain",
        "calendar-without-meeting",
        "url-with-brackets",
        "url-too-long",
        "naive-dtstamp",
    ],
)
def test_a_dispatch_that_cannot_make_a_message_is_refused(
    changes: dict[str, Any], url: str, dtstamp: datetime
) -> None:
    dispatch = make_dispatch(**changes)

    with pytest.raises(ValueError, match=r"."):
        build_message(dispatch, unsubscribe_url=url, sender_domain=DOMAIN, dtstamp=dtstamp)


def test_the_sender_domain_is_the_from_address_domain_lower_cased() -> None:
    assert sender_domain("Vendas@ACME.com.br") == "acme.com.br"
    with pytest.raises(ValueError, match="host name"):
        sender_domain("vendas@localhost")


# --- the invitation --------------------------------------------------------------------------


def test_an_invitation_is_the_text_then_a_calendar_request() -> None:
    raw = build_message(
        make_dispatch("calendar"), unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW
    )

    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    text, calendar = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert calendar.get_content_type() == "text/calendar"
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_content_charset() == "utf-8"
    assert f"\r\nContent-Type: {CALENDAR_TYPE}\r\n".encode() in raw
    # Every email, invitations included, offers the one-click unsubscribe.
    assert message["List-Unsubscribe"] == f"<{URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_invitation_reads_back_with_icalendar() -> None:
    raw = build_message(
        make_dispatch("calendar"), unsubscribe_url=URL, sender_domain=DOMAIN, dtstamp=NOW
    )

    calendar = calendar_of(parse(raw))
    event = event_of(calendar)
    assert calendar["METHOD"] == "REQUEST"
    assert calendar["VERSION"] == "2.0"
    assert str(event["UID"]) == f"{DISPATCH_KEY}@acme.com.br"
    assert event.start == SLOT.starts_at
    assert event.end == SLOT.ends_at
    assert event["DTSTART"].params["TZID"] == "America/Sao_Paulo"
    assert event["DTEND"].params["TZID"] == "America/Sao_Paulo"
    assert isinstance(event.start, datetime)
    assert event.start.utcoffset() == timedelta(hours=-3)
    assert event.decoded("DTSTAMP") == NOW
    assert str(event["SUMMARY"]) == "Uma proposta para a sua equipe"
    assert str(event["DESCRIPTION"]) == "Olá Ana,\nTudo bem?"
    assert str(event["ORGANIZER"]) == "mailto:vendas@acme.com.br"
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:ana.souza@example.com"
    assert attendee.params["RSVP"] == "TRUE"
    assert attendee.params["PARTSTAT"] == "NEEDS-ACTION"
    assert attendee.params["ROLE"] == "REQ-PARTICIPANT"
    assert event["SEQUENCE"] == 0
    assert str(event["STATUS"]) == "CONFIRMED"
    assert [tz.tz_name for tz in calendar.timezones] == ["America/Sao_Paulo"]
    assert calendar.get_missing_tzids() == set()


def test_a_slot_given_in_utc_is_written_in_the_meetings_zone() -> None:
    # GIVEN the same slot expressed in UTC
    meeting = Meeting(
        starts_at=SLOT.starts_at.astimezone(UTC),
        ends_at=SLOT.ends_at.astimezone(UTC),
        timezone="America/Sao_Paulo",
    )

    ics = build_invitation(
        make_dispatch("calendar", meeting=meeting), sender_domain=DOMAIN, dtstamp=NOW
    )

    assert b"DTSTART;TZID=America/Sao_Paulo:20261126T100000\r\n" in ics
    assert b"DTEND;TZID=America/Sao_Paulo:20261126T103000\r\n" in ics


def test_the_vtimezone_covers_the_events_year_only() -> None:
    # GIVEN a zone with daylight saving time
    berlin = ZoneInfo("Europe/Berlin")
    meeting = Meeting(
        starts_at=datetime(2026, 7, 1, 9, 0, tzinfo=berlin),
        ends_at=datetime(2026, 7, 1, 9, 30, tzinfo=berlin),
        timezone="Europe/Berlin",
    )

    ics = build_invitation(
        make_dispatch("calendar", meeting=meeting), sender_domain=DOMAIN, dtstamp=NOW
    )

    calendar = Calendar.from_ical(ics)
    assert isinstance(calendar, Calendar)
    (timezone,) = calendar.timezones
    onsets = [sub.DTSTART for sub in timezone.standard + timezone.daylight]
    assert {onset.year for onset in onsets} == {2026}
    assert [sub.DTSTART for sub in timezone.daylight] == [datetime(2026, 3, 29, 3, 0)]
    start = event_of(calendar).start
    assert isinstance(start, datetime)
    assert start.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "meeting",
    [
        Meeting(SLOT.starts_at, SLOT.ends_at, "Mars/Olympus_Mons"),
        Meeting(SLOT.starts_at, SLOT.ends_at, "../etc/passwd"),
        Meeting(SLOT.ends_at, SLOT.starts_at, "America/Sao_Paulo"),
        Meeting(SLOT.starts_at.replace(tzinfo=None), SLOT.ends_at, "America/Sao_Paulo"),
    ],
    ids=["unknown-zone", "not-a-zone-name", "ends-before-it-starts", "naive-start"],
)
def test_a_meeting_that_cannot_be_an_event_is_refused(meeting: Meeting) -> None:
    with pytest.raises(ValueError, match=r"."):
        build_invitation(
            make_dispatch("calendar", meeting=meeting), sender_domain=DOMAIN, dtstamp=NOW
        )


# --- the request -----------------------------------------------------------------------------


def test_the_request_carries_the_message_the_recipient_the_tags_and_the_config_set() -> None:
    request = build_request(make_dispatch(), b"raw")

    assert request == {
        "FromEmailAddress": "vendas@acme.com.br",
        "Destination": {"ToAddresses": ["ana.souza@example.com"]},
        "Content": {"Raw": {"Data": b"raw"}},
        "EmailTags": [
            {"Name": "dispatch_key", "Value": DISPATCH_KEY},
            {"Name": "tenant_id", "Value": "test-001"},
        ],
        "ConfigurationSetName": "tenant-test-001",
    }


def test_without_a_configuration_set_the_identitys_default_applies() -> None:
    request = build_request(make_dispatch(configuration_set=None), b"raw")

    assert "ConfigurationSetName" not in request


@pytest.mark.parametrize(
    "changes",
    [{"tenant_id": "tenant.one"}, {"tenant_id": ""}, {"dispatch_key": "k" * 257}],
    ids=["dot", "empty", "too-long"],
)
def test_a_value_ses_would_refuse_as_a_tag_is_refused_first(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="SES tag"):
        build_request(make_dispatch(**changes), b"raw")


# --- unsubscribe tokens ----------------------------------------------------------------------


def token(**changes: Any) -> str:
    fields: dict[str, Any] = {
        "tenant_id": "test-001",
        "lead_id": LEAD,
        "channel": "email",
        "key": KEY,
        "issued_at": 1_795_000_000,
    }
    fields.update(changes)
    key, issued_at = fields.pop("key"), fields.pop("issued_at")
    return sign(**fields, key=key, issued_at=issued_at)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_token_verifies_to_its_tenant_lead_and_channel() -> None:
    claim = verify(token(), key=KEY)

    assert claim == UnsubscribeClaim("test-001", LEAD, "email")
    tenant_id, lead_id, channel = claim
    assert (tenant_id, lead_id, channel) == ("test-001", LEAD, "email")


def test_a_token_is_url_safe_and_holds_only_ids() -> None:
    value = token()

    payload, mac = value.split(".")
    assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert unb64(payload) == f"v1|test-001|{LEAD}|email|1795000000".encode()
    assert len(unb64(mac)) == 32


@pytest.mark.parametrize(
    ("position", "replacement"),
    [(1, "test-002"), (2, "8b0d2c8e-1f1e-4c55-9b9e-0c8f1e2d3a4b"), (3, "whatsapp"), (4, "0")],
    ids=["tenant", "lead", "channel", "issued-at"],
)
def test_an_altered_field_is_refused(position: int, replacement: str) -> None:
    # GIVEN a genuine token whose payload is re-encoded with one field changed, MAC kept
    payload, mac = token().split(".")
    fields = unb64(payload).decode().split("|")
    fields[position] = replacement
    forged = f"{b64('|'.join(fields).encode())}.{mac}"

    with pytest.raises(InvalidUnsubscribeTokenError):
        verify(forged, key=KEY)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t[:-10],
        lambda t: t.split(".")[0],
        lambda t: t.split(".")[0] + ".",
        lambda t: "." + t.split(".")[1],
        lambda t: t[: len(t) // 2],
        lambda t: t + "A",
        lambda t: t + "=",
        lambda t: t + ".x",
        lambda t: t.replace(".", ".!"),
        lambda t: t.replace(".", ". "),
        lambda t: "+" + t[1:],
        lambda t: t[:-1] + "/",
        lambda t: "",
        lambda t: "." * 3,
        lambda t: "é" + t,
        lambda t: t + "A" * 600,
    ],
    ids=[
        "truncated-by-one",
        "truncated",
        "no-mac",
        "empty-mac",
        "no-payload",
        "half",
        "extra-char",
        "padded",
        "extra-part",
        "junk-char",
        "space",
        "plus",
        "slash",
        "empty",
        "dots",
        "non-ascii",
        "huge",
    ],
)
def test_a_malformed_token_is_refused(mangle: Callable[[str], str]) -> None:
    original = token()
    mangled = mangle(original)
    assert mangled != original

    with pytest.raises(InvalidUnsubscribeTokenError):
        verify(mangled, key=KEY)


def test_a_non_canonical_base64_spelling_is_refused() -> None:
    # GIVEN the same bytes spelled differently: the unused low bits of the last character set
    payload, mac = token().split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    respelled = mac[:-1] + alphabet[last | 1 if last % 2 == 0 else last & ~1]
    assert unb64(respelled) == unb64(mac)

    with pytest.raises(InvalidUnsubscribeTokenError):
        verify(f"{payload}.{respelled}", key=KEY)


def test_a_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(InvalidUnsubscribeTokenError):
        verify(token(key=b"another-signing-key-0123456789ab"), key=KEY)


def test_a_mac_moved_from_another_token_is_refused() -> None:
    payload, _ = token().split(".")
    _, other_mac = token(lead_id="0" * 8).split(".")

    with pytest.raises(InvalidUnsubscribeTokenError):
        verify(f"{payload}.{other_mac}", key=KEY)


@given(position=st.integers(min_value=0), char=st.sampled_from("AQgw-_09az"))
def test_any_single_character_change_is_refused(position: int, char: str) -> None:
    original = token()
    index = position % len(original)
    changed = original[:index] + char + original[index + 1 :]
    if changed == original:
        return

    with pytest.raises(InvalidUnsubscribeTokenError):
        verify(changed, key=KEY)


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant_id": "a|b"},
        {"tenant_id": ""},
        {"lead_id": "x" * 65},
        {"lead_id": "lead.1"},
        {"channel": "sms"},
        {"issued_at": -1},
        {"key": b"short"},
    ],
    ids=["separator", "empty-tenant", "long-lead", "dot", "unknown-channel", "negative", "key"],
)
def test_signing_refuses_what_it_could_not_verify(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        token(**changes)


def test_a_short_key_is_a_configuration_error_not_a_forgery() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes") as raised:
        verify(token(), key=b"short")

    assert not isinstance(raised.value, InvalidUnsubscribeTokenError)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (BASE_URL, f"{BASE_URL}?token=T.M"),
        ("https://abc.on.aws", "https://abc.on.aws/?token=T.M"),
        ("https://abc.on.aws/u?lang=pt&x=", "https://abc.on.aws/u?lang=pt&x=&token=T.M"),
        ("https://abc.on.aws/u?token=old", "https://abc.on.aws/u?token=T.M"),
        ("http://localhost:9000/u", "http://localhost:9000/u?token=T.M"),
    ],
)
def test_the_unsubscribe_url_carries_the_token(base: str, expected: str) -> None:
    assert unsubscribe_url(base, "T.M") == expected


@pytest.mark.parametrize(
    "base",
    [
        "http://abc.on.aws/u",
        "ftp://abc.on.aws/u",
        "https:///u",
        "https://user:pw@abc.on.aws/u",
        "https://abc.on.aws/u#top",
        "abc.on.aws/u",
    ],
)
def test_an_unusable_unsubscribe_base_url_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="UNSUBSCRIBE_URL"):
        unsubscribe_url(base, "T.M")


# --- the answers -----------------------------------------------------------------------------

# One row per SES error code: (retryable, pause_channel). Any change to ERRORS shows up here.
EXPECTED_ERRORS = {
    "TooManyRequestsException": (True, False),
    "ThrottlingException": (True, False),
    "LimitExceededException": (True, False),
    "SendingPausedException": (False, True),
    "AccountSuspendedException": (False, True),
    "MailFromDomainNotVerifiedException": (False, True),
    "NotFoundException": (False, True),
    "AccessDeniedException": (False, True),
    "MessageRejected": (False, False),
    "BadRequestException": (False, False),
}


def test_the_error_table_has_exactly_the_reviewed_rows() -> None:
    assert dict(ERRORS) == {
        code: ErrorRule(retryable, pause) for code, (retryable, pause) in EXPECTED_ERRORS.items()
    }


@pytest.mark.parametrize(("code", "expected"), EXPECTED_ERRORS.items())
def test_each_ses_error_is_a_definite_failure(code: str, expected: tuple[bool, bool]) -> None:
    retryable, pause_channel = expected

    result = map_error(code, 400, "why")

    assert result == SendResult(
        "failed",
        error_code=code,
        retryable=retryable,
        pause_channel=pause_channel,
        detail="why",
    )


def test_an_unlisted_client_error_is_a_permanent_failure() -> None:
    assert map_error("AccountSendingPausedOrSomethingNew", 400) == SendResult(
        "failed", error_code="AccountSendingPausedOrSomethingNew", retryable=False
    )


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_may_have_sent_the_message(status: int) -> None:
    assert map_error("InternalFailure", status) == SendResult(
        "unknown", error_code="InternalFailure"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectTimeoutError(endpoint_url="u"), ("failed", "connect_error", True)),
        (EndpointConnectionError(endpoint_url="u"), ("failed", "connect_error", True)),
        (NoCredentialsError(), ("failed", "credentials_error", True)),
        (
            CredentialRetrievalError(provider="p", error_msg="m"),
            ("failed", "credentials_error", True),
        ),
        (ParamValidationError(report="r"), ("failed", "invalid_request", False)),
        (ReadTimeoutError(endpoint_url="u"), ("unknown", "read_timeout", None)),
        (ConnectionClosedError(endpoint_url="u"), ("unknown", "connection_closed", None)),
        (SSLError(endpoint_url="u", error=OSError("e")), ("unknown", "transport_error", None)),
        (BotoCoreError(), ("unknown", "transport_error", None)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_a_transport_error_is_failed_only_when_nothing_left(
    error: BotoCoreError, expected: tuple[str, str, bool | None]
) -> None:
    status, code, retryable = expected

    result = map_transport_error(error)

    assert (result.status, result.error_code, result.retryable) == (status, code, retryable)
    assert result.detail == type(error).__name__


def test_redact_masks_every_address() -> None:
    message = (
        "Email address is not verified. The following identities failed the check in "
        "region US-EAST-1: ana.souza@example.com, bob@acme.com.br"
    )

    assert redact(message).endswith("a***@example.com, b***@acme.com.br")


# --- the adapter, against a fake client ------------------------------------------------------


class FakeSes:
    """Records each ``send_email`` call; answers with ``answer`` (a response or an error)."""

    def __init__(self, answer: dict[str, Any] | Exception | None = None) -> None:
        self.answer = answer if answer is not None else {"MessageId": "0100-abc-000000"}
        self.calls: list[dict[str, Any]] = []

    def send_email(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def make_sender(fake: FakeSes, made: list[FakeSes] | None = None) -> SesSender:
    def factory() -> Any:
        if made is not None:
            made.append(fake)
        return fake

    return SesSender(factory, unsubscribe_base_url=BASE_URL, signing_key=KEY, clock=lambda: NOW)


def client_error(code: str, status: int, message: str = "no") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendEmail")


def test_an_accepted_send_is_sent_with_the_ses_message_id() -> None:
    fake = FakeSes()

    result = make_sender(fake).send(make_dispatch("calendar"))

    assert result == SendResult("sent", provider_message_id="0100-abc-000000")
    (call,) = fake.calls
    assert call["EmailTags"] == [
        {"Name": "dispatch_key", "Value": DISPATCH_KEY},
        {"Name": "tenant_id", "Value": "test-001"},
    ]
    assert call["ConfigurationSetName"] == "tenant-test-001"
    # The link's token verifies to this lead, for email (invitations are emails).
    link = parse(call["Content"]["Raw"]["Data"])["List-Unsubscribe"]
    assert verify(link.split("token=")[1].rstrip(">"), key=KEY) == ("test-001", LEAD, "email")


def test_the_client_is_made_once_and_reused() -> None:
    fake, made = FakeSes(), list[FakeSes]()
    sender = make_sender(fake, made)

    sender.send(make_dispatch())
    sender.send(make_dispatch(dispatch_key="6a" * 32))

    assert len(made) == 1
    assert len(fake.calls) == 2


def test_nothing_is_made_before_the_first_send() -> None:
    made: list[FakeSes] = []

    make_sender(FakeSes(), made)

    assert made == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (client_error("TooManyRequestsException", 429), ("failed", True)),
        (client_error("MessageRejected", 400), ("failed", False)),
        (client_error("InternalFailure", 500), ("unknown", None)),
        (ReadTimeoutError(endpoint_url="u"), ("unknown", None)),
        (EndpointConnectionError(endpoint_url="u"), ("failed", True)),
        ({"ResponseMetadata": {}}, ("unknown", None)),
    ],
    ids=["throttled", "rejected", "server-error", "read-timeout", "no-connection", "no-id"],
)
def test_each_answer_is_recorded(answer: Any, expected: tuple[str, bool | None]) -> None:
    result = make_sender(FakeSes(answer)).send(make_dispatch())

    assert (result.status, result.retryable) == expected
    assert result.provider_message_id is None


def test_a_dispatch_that_cannot_be_built_fails_without_a_call() -> None:
    fake = FakeSes()

    result = make_sender(fake).send(make_dispatch("calendar", meeting=None))

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "invalid_dispatch",
        False,
    )
    assert fake.calls == []


def test_a_client_that_cannot_be_made_is_a_retryable_failure() -> None:
    def factory() -> Any:
        raise NoRegionError()

    sender = SesSender(factory, unsubscribe_base_url=BASE_URL, signing_key=KEY, clock=lambda: NOW)

    result = sender.send(make_dispatch())

    assert (result.status, result.error_code, result.retryable) == ("failed", "client_error", True)


def test_logs_and_details_never_hold_a_full_address(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN SES naming the recipient in its error message
    answer = client_error(
        "MessageRejected", 400, "Email address is not verified: ana.souza@example.com"
    )
    caplog.set_level(logging.DEBUG, logger="dry_run.senders.email")

    result = make_sender(FakeSes(answer)).send(make_dispatch())

    assert result.detail == "Email address is not verified: a***@example.com"
    assert "ana.souza@example.com" not in caplog.text
    assert "a***@example.com" in caplog.text
    assert DISPATCH_KEY in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unsubscribe_base_url": "http://abc.on.aws/u"}, "UNSUBSCRIBE_URL"),
        ({"signing_key": b"short"}, "16 bytes"),
    ],
)
def test_a_sender_without_a_working_unsubscribe_is_refused(
    changes: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {
        "unsubscribe_base_url": BASE_URL,
        "signing_key": KEY,
        "clock": lambda: NOW,
    }
    settings.update(changes)

    with pytest.raises(ValueError, match=message):
        SesSender(FakeSes, **settings)  # type: ignore[arg-type]
