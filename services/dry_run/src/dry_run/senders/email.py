"""Email and calendar invitations through Amazon SES v2 ``SendEmail`` with ``Content.Raw``.

Three pure pieces and one small adapter (shared/STYLE.md):

- :func:`build_message` writes the MIME message (standard library ``email``, CRLF): every email
  carries a one-click ``List-Unsubscribe`` (RFC 8058); an invitation is a
  ``multipart/alternative`` with a ``text/calendar; method=REQUEST`` part whose event ``UID`` is
  ``<dispatch key>@<sender domain>`` (:func:`build_invitation`, written with icalendar);
- :func:`build_request` turns a dispatch and its message into ``SendEmail``'s arguments, the
  dispatch key and the tenant attached as ``EmailTags`` (SES events carry them back, which is
  how the webhook resolves an ``unknown`` send);
- :data:`ERRORS` and :data:`TRANSPORT_ERRORS` map SES's answers to ``sent``/``failed``/``unknown``;
- :class:`SesSender` makes the one call, through a client that never retries on its own.

SES replaces the ``Message-ID`` and ``Date`` headers we write with its own; the stable
``Message-ID`` still helps any copy of the message that does not pass through SES.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from dry_run.contacts import mask_email
from dry_run.senders import Dispatch, SendResult
from dry_run.unsubscribe import sign, unsubscribe_url

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import SendEmailRequestTypeDef

logger = logging.getLogger(__name__)

# CRLF line ends, and every body in 7 bits (quoted-printable or base64 when it is not ASCII):
# SES asks for content outside 7-bit ASCII to be encoded.
POLICY = SMTP.clone(cte_type="7bit")
PRODID = "-//micro-agent//outreach//EN"
ONE_CLICK = "List-Unsubscribe=One-Click"
CALENDAR_TYPE = "text/calendar; method=REQUEST; charset=UTF-8"
# SES message tags (names and values): ASCII letters, digits, '_' and '-', at most 256 characters.
# Tenant ids (events.TENANT_ID_PATTERN) and dispatch keys (sha256 hex) always fit; anything else
# is refused before the call rather than by SES after it.
_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+")
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+")
_EMAIL_IN_TEXT = re.compile(r"[^@\s<>()\[\],;:\"']+@[A-Za-z0-9.-]+")
# RFC 5322 caps a line at 998 characters; the unsubscribe header is written on one line.
_MAX_HEADER_LINE = 998
_MAX_DETAIL = 200
# The token's channel: calendar invitations are emails, and an email opt-out blocks them too.
UNSUBSCRIBE_CHANNEL = "email"


# --- the message -----------------------------------------------------------------------------


class _OneLineHeader(str):
    """A header written exactly as given, on one line.

    The ``email`` package folds an over-long unbreakable value (a long URL) into RFC 2047
    encoded-words, which would turn ``<https://…>`` into ``=?utf-8?q?=3Chttps…`` and break the
    unsubscribe link. A value with a ``name`` attribute is stored and folded by the value
    itself (``EmailPolicy.header_store_parse``), which is what this class is for.
    """

    name: str

    def __new__(cls, name: str, value: str) -> _OneLineHeader:
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _ascii_address(role: str, address: str) -> str:
    # SES takes 7-bit addresses only (no SMTPUTF8); refuse others before building anything.
    if not (address.isascii() and _ADDRESS.fullmatch(address)):
        raise ValueError(f"the {role} is not a plain ASCII email address: {mask_email(address)}")
    return address


def sender_domain(sender: str) -> str:
    """The domain of the From address, lower-cased: the right-hand side of ``UID``s."""
    domain = _ascii_address("sender", sender).rpartition("@")[2].lower()
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"the sender's domain {domain!r} is not a host name")
    return domain


def _check_dispatch(dispatch: Dispatch, domain: str) -> str:
    if dispatch.channel not in ("email", "calendar"):
        raise ValueError(f"channel {dispatch.channel!r} is not sent by email")
    if not _TAG_VALUE.fullmatch(dispatch.dispatch_key):
        raise ValueError(f"dispatch key {dispatch.dispatch_key!r} is not 1-256 of [A-Za-z0-9_-]")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"sender domain {domain!r} is not a host name")
    _ascii_address("sender", dispatch.sender)
    _ascii_address("recipient", dispatch.recipient)
    subject = (dispatch.content.subject or "").strip()
    if not subject:
        raise ValueError(f"template {dispatch.template!r} has no subject; an email needs one")
    return subject


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value.isoformat()}")
    return value


@lru_cache(maxsize=64)
def _vtimezone(tzid: str, first_date: date, last_date: date) -> bytes:
    # Generating a VTIMEZONE walks the zone's transitions (~30 ms for a zone without DST);
    # parsing the cached text back is ~1 ms.
    from icalendar import Timezone  # noqa: PLC0415 - icalendar costs ~300 ms to import

    return bytes(Timezone.from_tzid(tzid, first_date=first_date, last_date=last_date).to_ical())


def build_invitation(dispatch: Dispatch, *, sender_domain: str, dtstamp: datetime) -> bytes:
    """The iCalendar ``REQUEST`` (RFC 5546) for a calendar dispatch's meeting, as bytes.

    One VEVENT, ``UID`` ``<dispatch key>@<sender domain>`` (a resend of the same intent updates
    the same event), its slot in the meeting's zone with a VTIMEZONE for that zone bounded to
    the event's year(s), the sender as ``ORGANIZER`` and the lead as an ``ATTENDEE`` asked to
    answer. Raises ValueError when the dispatch cannot make one.
    """
    from icalendar import Calendar, Event, Timezone, vCalAddress  # noqa: PLC0415 - as above

    subject = _check_dispatch(dispatch, sender_domain)
    meeting = dispatch.meeting
    if meeting is None:
        raise ValueError("a calendar dispatch needs its meeting slot")
    try:
        zone = ZoneInfo(meeting.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"meeting timezone {meeting.timezone!r} is not an IANA zone") from exc
    starts_at = _aware("meeting.starts_at", meeting.starts_at).astimezone(zone)
    ends_at = _aware("meeting.ends_at", meeting.ends_at).astimezone(zone)
    if ends_at <= starts_at:
        raise ValueError(f"the meeting ends ({ends_at}) before it starts ({starts_at})")

    event = Event()
    event.add("uid", f"{dispatch.dispatch_key}@{sender_domain}")
    event.add("dtstamp", _aware("dtstamp", dtstamp).astimezone(UTC))
    event.add("dtstart", starts_at)
    event.add("dtend", ends_at)
    event.add("summary", subject)
    if dispatch.content.body:
        event.add("description", dispatch.content.body)
    event.add("organizer", vCalAddress(f"mailto:{dispatch.sender}"))
    attendee = vCalAddress(f"mailto:{dispatch.recipient}")
    attendee.params["CUTYPE"] = "INDIVIDUAL"
    attendee.params["ROLE"] = "REQ-PARTICIPANT"
    attendee.params["PARTSTAT"] = "NEEDS-ACTION"
    attendee.params["RSVP"] = "TRUE"
    event.add("attendee", attendee)
    event.add("sequence", 0)
    event.add("status", "CONFIRMED")
    event.add("transp", "OPAQUE")

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "REQUEST")
    calendar.add_component(event)
    # Clients resolve TZID through the VTIMEZONE sent along (RFC 5545 3.2.19); a UTC slot has
    # none to send. Bounded to the event's year(s): the full history would be kilobytes.
    first, last = date(starts_at.year, 1, 1), date(ends_at.year + 1, 1, 1)
    for position, tzid in enumerate(sorted(calendar.get_missing_tzids())):
        calendar.subcomponents.insert(position, Timezone.from_ical(_vtimezone(tzid, first, last)))
    if calendar.get_missing_tzids():
        raise ValueError(f"icalendar has no VTIMEZONE for {meeting.timezone!r}")
    return bytes(calendar.to_ical())


def build_message(
    dispatch: Dispatch, *, unsubscribe_url: str, sender_domain: str, dtstamp: datetime
) -> bytes:
    """The raw MIME message for an email or calendar dispatch (CRLF, 7-bit), ready for SES.

    Headers: From, To, Subject, Date (``dtstamp``), ``Message-ID: <dispatch key@sender
    domain>``, ``List-Unsubscribe: <url>`` and ``List-Unsubscribe-Post:
    List-Unsubscribe=One-Click``. An email is one ``text/plain`` part; an invitation is
    ``multipart/alternative``: that text, then the ``text/calendar; method=REQUEST`` part.
    Raises ValueError when the dispatch cannot make a message.
    """
    subject = _check_dispatch(dispatch, sender_domain)
    if not (unsubscribe_url.isascii() and unsubscribe_url.isprintable()) or any(
        char in unsubscribe_url for char in " <>"
    ):
        raise ValueError("the unsubscribe URL must be printable ASCII without spaces or <>")
    list_unsubscribe = f"<{unsubscribe_url}>"
    if len("List-Unsubscribe: ") + len(list_unsubscribe) > _MAX_HEADER_LINE:
        raise ValueError(f"the unsubscribe URL is too long ({len(unsubscribe_url)} characters)")
    if dispatch.channel == "calendar" and dispatch.meeting is None:
        raise ValueError("a calendar dispatch needs its meeting slot")

    message = EmailMessage(policy=POLICY)
    message["From"] = dispatch.sender
    message["To"] = dispatch.recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(_aware("dtstamp", dtstamp).astimezone(UTC))
    message["Message-ID"] = f"<{dispatch.dispatch_key}@{sender_domain}>"
    message["List-Unsubscribe"] = _OneLineHeader("List-Unsubscribe", list_unsubscribe)
    message["List-Unsubscribe-Post"] = ONE_CLICK
    message.set_content(dispatch.content.body)
    if dispatch.channel == "calendar":
        invitation = build_invitation(dispatch, sender_domain=sender_domain, dtstamp=dtstamp)
        # base64 keeps a non-ASCII invitation's folded lines intact; an ASCII one goes as is.
        encoding = "7bit" if invitation.isascii() else "base64"
        message.add_alternative(invitation.decode("utf-8"), subtype="calendar", cte=encoding)
        *_, calendar_part = message.iter_parts()
        # Written as Outlook and Gmail write it: the library would quote "REQUEST".
        calendar_part.replace_header("Content-Type", _OneLineHeader("Content-Type", CALENDAR_TYPE))
        del calendar_part["MIME-Version"]  # belongs to the top level only
        # Derived from the key, so that the same dispatch always makes the same bytes; '=_'
        # cannot occur in quoted-printable or base64 text.
        message.set_boundary(f"=_micro-agent_{dispatch.dispatch_key[:32]}")
    return message.as_bytes()


# --- the request -----------------------------------------------------------------------------


def build_request(dispatch: Dispatch, raw_message: bytes) -> SendEmailRequestTypeDef:
    """``SendEmail``'s arguments: the raw message, the one recipient, the tags, the config set.

    The configuration set is the tenant's; without one, SES applies the sending identity's
    default configuration set, if any. Raises ValueError when a tag value would be refused.
    """
    tags = {"dispatch_key": dispatch.dispatch_key, "tenant_id": dispatch.tenant_id}
    for name, value in tags.items():
        if not _TAG_VALUE.fullmatch(value):
            raise ValueError(f"{name} {value!r} cannot be an SES tag: use 1-256 of [A-Za-z0-9_-]")
    request: SendEmailRequestTypeDef = {
        "FromEmailAddress": dispatch.sender,
        "Destination": {"ToAddresses": [dispatch.recipient]},
        "Content": {"Raw": {"Data": raw_message}},
        "EmailTags": [{"Name": name, "Value": value} for name, value in tags.items()],
    }
    if dispatch.configuration_set:
        request["ConfigurationSetName"] = dispatch.configuration_set
    return request


# --- the answers -----------------------------------------------------------------------------


class ErrorRule(NamedTuple):
    """What an SES error code means for the dispatch and for the tenant's email channel."""

    retryable: bool
    pause_channel: bool = False


# SendEmail's documented errors (botocore's sesv2 model), plus ThrottlingException, which SES
# documents for the sending quotas ("Daily message quota exceeded", "Maximum sending rate
# exceeded": "wait ... and then retry"). All are definite: SES did not accept the message.
ERRORS: Mapping[str, ErrorRule] = MappingProxyType(
    {
        # HTTP 429: the request rate; the next attempt, after the backoff, may pass.
        "TooManyRequestsException": ErrorRule(retryable=True),
        # The account's sending rate or 24-hour quota; both recover with time.
        "ThrottlingException": ErrorRule(retryable=True),
        # Documented as "too many instances of the specified resource type", but SendEmail
        # creates no resource: on this call it can only be an account sending limit, which
        # recovers with time. If it were permanent, retrying costs at most the 3 attempts.
        "LimitExceededException": ErrorRule(retryable=True),
        # Sending is paused for the account or the tenant's configuration set (by AWS over
        # reputation, or by an operator): only a person resumes it, so stop the channel.
        "SendingPausedException": ErrorRule(retryable=False, pause_channel=True),
        "AccountSuspendedException": ErrorRule(retryable=False, pause_channel=True),
        # The tenant's From domain (or MAIL FROM domain) is not verified: every send fails.
        "MailFromDomainNotVerifiedException": ErrorRule(retryable=False, pause_channel=True),
        # The tenant's configuration set (or identity) does not exist: every send fails.
        "NotFoundException": ErrorRule(retryable=False, pause_channel=True),
        # The function may not send from this identity or configuration set (IAM grants only
        # the stack's): every send of the tenant's channel fails until the program grants it.
        "AccessDeniedException": ErrorRule(retryable=False, pause_channel=True),
        # This message: invalid content, a virus, or (sandbox) an unverified recipient.
        "MessageRejected": ErrorRule(retryable=False),
        # This request's input; sending it again cannot change the answer.
        "BadRequestException": ErrorRule(retryable=False),
    }
)

# Errors raised by botocore without an answer from SES, checked in order (subclasses first).
# Only a failure to connect proves the request never left; after that, SES may have accepted
# the message and the answer was lost: ``unknown``, never resent.
TRANSPORT_ERRORS: tuple[tuple[type[BotoCoreError], SendResult], ...] = (
    (ConnectTimeoutError, SendResult("failed", error_code="connect_error", retryable=True)),
    (EndpointConnectionError, SendResult("failed", error_code="connect_error", retryable=True)),
    (NoCredentialsError, SendResult("failed", error_code="credentials_error", retryable=True)),
    (
        CredentialRetrievalError,
        SendResult("failed", error_code="credentials_error", retryable=True),
    ),
    (ParamValidationError, SendResult("failed", error_code="invalid_request", retryable=False)),
    (ReadTimeoutError, SendResult("unknown", error_code="read_timeout")),
    (ConnectionClosedError, SendResult("unknown", error_code="connection_closed")),
    (BotoCoreError, SendResult("unknown", error_code="transport_error")),
)


def map_error(code: str, http_status: int | None = None, detail: str | None = None) -> SendResult:
    """The ledger's record of an SES error answer (``ClientError``'s code and HTTP status).

    A code in :data:`ERRORS` is a definite ``failed``. Any other code is ``failed`` and not
    retryable, except a server error (HTTP 5xx), after which SES may have accepted the message:
    ``unknown``.
    """
    rule = ERRORS.get(code)
    if rule is not None:
        return SendResult(
            "failed",
            error_code=code,
            retryable=rule.retryable,
            pause_channel=rule.pause_channel,
            detail=detail,
        )
    if http_status is not None and http_status >= 500:
        return SendResult("unknown", error_code=code, detail=detail)
    return SendResult("failed", error_code=code, retryable=False, detail=detail)


def map_transport_error(error: BotoCoreError) -> SendResult:
    """The ledger's record of a botocore error raised without an answer from SES."""
    for kind, result in TRANSPORT_ERRORS:
        if isinstance(error, kind):
            return result._replace(detail=type(error).__name__)
    raise AssertionError("unreachable: BotoCoreError is the table's last row")  # pragma: no cover


def redact(text: str) -> str:
    """``text`` with every email address masked (SES error messages may name recipients)."""
    masked = _EMAIL_IN_TEXT.sub(lambda match: mask_email(match.group(0)) or "***", text)
    return masked[:_MAX_DETAIL]


# --- the adapter -----------------------------------------------------------------------------


def client_config() -> Config:
    """The SES client's settings: exactly one attempt per call, short timeouts."""
    from botocore.config import Config  # noqa: PLC0415 - only a live send needs it

    return Config(
        # One attempt: a retry below us could send the same email twice (standard mode would
        # retry a 429 or a 5xx, both of which SES may answer after accepting the message).
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=3,
        read_timeout=10,
    )


def default_client_factory() -> SESV2Client:
    """The SES v2 client a live run uses: the Lambda's region and role, :func:`client_config`."""
    import boto3  # noqa: PLC0415 - imported lazily: boto3 costs ~150 ms of cold start

    return boto3.client("sesv2", config=client_config())


class SesSender:
    """The email and calendar channel: one ``SendEmail`` call per dispatch, at most.

    The client is made by ``client_factory`` on the first send and reused for the container's
    life. ``signing_key`` signs the unsubscribe tokens (``UNSUBSCRIBE_SECRET_ARN``'s
    ``signingKey``), ``unsubscribe_base_url`` is ``UNSUBSCRIBE_URL``, and ``clock`` gives the
    aware time used for the invitation's ``DTSTAMP`` and the token's issue time.
    """

    def __init__(
        self,
        client_factory: Callable[[], SESV2Client] = default_client_factory,
        *,
        unsubscribe_base_url: str,
        signing_key: bytes,
        clock: Callable[[], datetime],
    ) -> None:
        # Fail at wiring time, not at the first lead: both raise ValueError when unusable.
        unsubscribe_url(unsubscribe_base_url, "probe")
        sign("probe", "probe", UNSUBSCRIBE_CHANNEL, key=signing_key, issued_at=0)
        self._client_factory = client_factory
        self._client: SESV2Client | None = None
        # The first sends of a container run on several threads at once; boto3 makes clients
        # from its default session, which is not thread-safe: one client, made once.
        self._client_lock = threading.Lock()
        self._unsubscribe_base_url = unsubscribe_base_url
        self._signing_key = signing_key
        self._clock = clock

    def _get_client(self) -> SESV2Client:
        with self._client_lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def prepare(self, dispatch: Dispatch, now: datetime) -> SendEmailRequestTypeDef:
        """The ``SendEmail`` arguments for ``dispatch`` at ``now``; ValueError if it has none."""
        token = sign(
            dispatch.tenant_id,
            dispatch.lead_id,
            UNSUBSCRIBE_CHANNEL,
            key=self._signing_key,
            issued_at=int(_aware("now", now).timestamp()),
        )
        raw = build_message(
            dispatch,
            unsubscribe_url=unsubscribe_url(self._unsubscribe_base_url, token),
            sender_domain=sender_domain(dispatch.sender),
            dtstamp=now,
        )
        return build_request(dispatch, raw)

    def send(self, dispatch: Dispatch) -> SendResult:
        """Send one claimed dispatch; the answer as the ``dispatches`` ledger records it."""
        try:
            request = self.prepare(dispatch, self._clock())
        except ValueError as exc:
            # Nothing was sent: a definite failure, not a claim the sweeper would call unknown.
            return self._log(
                dispatch,
                SendResult(
                    "failed",
                    error_code="invalid_dispatch",
                    retryable=False,
                    detail=redact(str(exc)),
                ),
            )
        try:
            client = self._get_client()
        except BotoCoreError as exc:  # no region, no endpoint: nothing was sent
            result = SendResult(
                "failed", error_code="client_error", retryable=True, detail=type(exc).__name__
            )
            return self._log(dispatch, result)
        try:
            response = client.send_email(**request)
        except ClientError as exc:
            error: Mapping[str, Any] = exc.response.get("Error", {})
            metadata: Mapping[str, Any] = exc.response.get("ResponseMetadata", {})
            result = map_error(
                str(error.get("Code", "Unknown")),
                metadata.get("HTTPStatusCode"),
                redact(str(error.get("Message", ""))) or None,
            )
            return self._log(dispatch, result)
        except BotoCoreError as exc:
            return self._log(dispatch, map_transport_error(exc))
        message_id = response.get("MessageId")
        if not message_id:  # accepted, yet no id to match SES events on
            return self._log(dispatch, SendResult("unknown", error_code="no_message_id"))
        return SendResult("sent", provider_message_id=message_id)

    @staticmethod
    def _log(dispatch: Dispatch, result: SendResult) -> SendResult:
        logger.warning(
            "email dispatch %s for tenant %s to %s: %s %s (%s)",
            dispatch.dispatch_key,
            dispatch.tenant_id,
            mask_email(dispatch.recipient),
            result.status,
            result.error_code,
            result.detail,
        )
        return result
