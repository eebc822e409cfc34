"""The WhatsApp adapter's pure parts: the request builder, the error table and the outcome rules.

No sockets here: the sender's socket is tested against the fake Graph API in
tests/integration/test_whatsapp_sender.py. The table is checked one row per mapped code, each
row written out by hand (not read back from the table), so a change to it shows up here.
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import replace
from typing import Any

import pytest
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from dry_run.exceptions import SettingsError
from dry_run.senders import Content, Dispatch, SendResult
from dry_run.senders.whatsapp import (
    ERROR_RANGES,
    ERRORS,
    TokenCache,
    WhatsAppSender,
    build_request,
    check_endpoint,
    map_response,
    outcome_of_exception,
)

GRAPH = "https://graph.facebook.com"
VERSION = "v21.0"
PHONE_NUMBER_ID = "106540352242922"
RECIPIENT = "+5511987654321"
SECRET_ARN = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:wa-acme-AbCdEf"


def dispatch(**changes: Any) -> Dispatch:
    """A WhatsApp template dispatch for the first contact, changed as given."""
    base = Dispatch(
        dispatch_key="acme:lead-42:whatsapp:first_contact:2026-03-02",
        tenant_id="acme",
        lead_id="lead-42",
        channel="whatsapp",
        template="first_contact",
        recipient=RECIPIENT,
        sender=PHONE_NUMBER_ID,
        content=Content(language="pt_BR", parameters=("Ana", "Acme Imóveis")),
        secret_arn=SECRET_ARN,
    )
    return replace(base, **changes)


def graph_error(code: Any, **extra: Any) -> bytes:
    """Meta's error JSON for a code, as the Graph API answers it."""
    error = {
        "message": f"(#{code}) Some title",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": "Some details."},
        "fbtrace_id": "AbCdEf123",
        **extra,
    }
    return json.dumps({"error": error}).encode()


# --- build_request ---------------------------------------------------------------------------


def test_a_template_with_parameters_is_sent_as_a_body_component() -> None:
    url, body = build_request(dispatch(), graph_url=GRAPH, api_version=VERSION)

    assert url == f"https://graph.facebook.com/v21.0/{PHONE_NUMBER_ID}/messages"
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+5511987654321",
        "type": "template",
        "template": {
            "name": "first_contact",
            "language": {"code": "pt_BR"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "Acme Imóveis"},
                    ],
                }
            ],
        },
        "biz_opaque_callback_data": "acme:lead-42:whatsapp:first_contact:2026-03-02",
    }


def test_a_template_without_parameters_has_no_components() -> None:
    _, body = build_request(
        dispatch(content=Content(language="en_US")), graph_url=GRAPH, api_version=VERSION
    )

    assert body["template"] == {"name": "first_contact", "language": {"code": "en_US"}}


def test_a_template_without_a_language_is_sent_in_brazilian_portuguese() -> None:
    _, body = build_request(
        dispatch(content=Content(parameters=("Ana",))), graph_url=GRAPH, api_version=VERSION
    )

    assert body["template"]["language"] == {"code": "pt_BR"}


def test_a_session_message_is_sent_as_text() -> None:
    _, body = build_request(
        dispatch(template=None, content=Content(body="Oi Ana, tudo bem?")),
        graph_url=GRAPH,
        api_version=VERSION,
    )

    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+5511987654321",
        "type": "text",
        "text": {"body": "Oi Ana, tudo bem?"},
        "biz_opaque_callback_data": "acme:lead-42:whatsapp:first_contact:2026-03-02",
    }


@pytest.mark.parametrize("template", ["first_contact", None])
def test_the_dispatch_key_is_always_the_opaque_callback_data(template: str | None) -> None:
    _, body = build_request(
        dispatch(dispatch_key="k-1", template=template, content=Content(body="Oi")),
        graph_url=GRAPH,
        api_version=VERSION,
    )

    assert body["biz_opaque_callback_data"] == "k-1"


def test_the_url_tolerates_a_trailing_slash_and_names_the_sender_and_version() -> None:
    url, _ = build_request(
        dispatch(sender="42"), graph_url="http://127.0.0.1:8999/", api_version="v23.0"
    )

    assert url == "http://127.0.0.1:8999/v23.0/42/messages"


def test_a_body_is_plain_json() -> None:
    _, body = build_request(dispatch(), graph_url=GRAPH, api_version=VERSION)

    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sender": "../me"}, "is not a WhatsApp phone number id"),
        ({"sender": ""}, "is not a WhatsApp phone number id"),
        ({"recipient": "5511987654321"}, "is not an E.164 number"),
        ({"recipient": "+55 11 98765-4321"}, "is not an E.164 number"),
        ({"dispatch_key": "k" * 513}, "must have 1 to 512 characters"),
        ({"dispatch_key": ""}, "must have 1 to 512 characters"),
        ({"template": None, "content": Content(body="")}, "needs a body of 1 to 4096"),
        ({"template": None, "content": Content(body="x" * 4097)}, "needs a body of 1 to 4096"),
        ({"channel": "email"}, "not whatsapp"),
    ],
)
def test_a_dispatch_that_cannot_be_sent_as_is_is_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_request(dispatch(**changes), graph_url=GRAPH, api_version=VERSION)


def test_a_refused_recipient_is_named_masked() -> None:
    with pytest.raises(ValueError, match="recipient") as refused:
        build_request(dispatch(recipient="5511987654321"), graph_url=GRAPH, api_version=VERSION)

    assert "987654321" not in str(refused.value)


@pytest.mark.parametrize(
    ("graph_url", "api_version", "variable"),
    [
        ("http://graph.facebook.com", "v21.0", "WHATSAPP_GRAPH_URL"),
        ("graph.facebook.com", "v21.0", "WHATSAPP_GRAPH_URL"),
        ("https://graph.facebook.com?x=1", "v21.0", "WHATSAPP_GRAPH_URL"),
        ("https://graph.facebook.com", "21.0", "WHATSAPP_API_VERSION"),
        ("https://graph.facebook.com", "v21.0/../x", "WHATSAPP_API_VERSION"),
    ],
)
def test_an_unusable_endpoint_is_a_settings_error(
    graph_url: str, api_version: str, variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        check_endpoint(graph_url, api_version)


@pytest.mark.parametrize("graph_url", ["https://graph.facebook.com", "http://127.0.0.1:8999"])
def test_https_or_plain_http_to_this_machine_is_usable(graph_url: str) -> None:
    check_endpoint(graph_url, "v21.0")


# --- the error table -------------------------------------------------------------------------

# (code, retryable, pause_channel, unreachable): one row per code ERRORS maps.
MAPPED = [
    (4, True, False, False),
    (80007, True, False, False),
    (130429, True, False, False),
    (131056, True, False, False),
    (2, True, False, False),
    (131000, True, False, False),
    (131016, True, False, False),
    (131057, True, False, False),
    (133004, True, False, False),
    (131047, False, False, False),
    (131049, False, False, False),
    (131026, False, False, True),
    (131050, False, False, True),
    (100, False, False, False),
    (0, False, True, False),
    (190, False, True, False),
    (10, False, True, False),
    (368, False, True, False),
    (131031, False, True, False),
    (131048, False, True, False),
]
# Codes in ERROR_RANGES' families.
FAMILIES = [
    (132000, False, False, False),
    (132001, False, False, False),
    (132015, False, False, False),
    (132999, False, False, False),
    (200, False, True, False),
    (299, False, True, False),
]


def test_every_mapped_code_has_a_row_here() -> None:
    assert sorted(code for code, *_ in MAPPED) == sorted(ERRORS)
    assert all(any(code in codes for codes, _ in ERROR_RANGES) for code, *_ in FAMILIES)


@pytest.mark.parametrize(("code", "retryable", "pause_channel", "unreachable"), MAPPED + FAMILIES)
def test_a_mapped_error_code_fails_with_its_flags(
    code: int, retryable: bool, pause_channel: bool, unreachable: bool
) -> None:
    result = map_response(400, graph_error(code))

    assert result.status == "failed"
    assert result.error_code == str(code)
    assert (result.retryable, result.pause_channel, result.unreachable) == (
        retryable,
        pause_channel,
        unreachable,
    )
    assert result.provider_message_id is None


@pytest.mark.parametrize("code", [1, 3, 131021, 131030, 133000, 999999])
def test_an_unknown_error_code_fails_without_a_retry_or_flags(code: int) -> None:
    result = map_response(400, graph_error(code))

    assert result == SendResult(
        "failed",
        error_code=str(code),
        retryable=False,
        pause_channel=False,
        unreachable=False,
        detail=result.detail,
    )
    assert "not retried" in (result.detail or "")


def test_the_error_code_decides_whatever_the_http_status() -> None:
    # 131000 comes with a 500; it is still Meta saying the message failed.
    assert map_response(500, graph_error(131000)).status == "failed"
    assert map_response(429, graph_error(130429)).retryable is True


def test_an_error_code_given_as_a_string_is_read() -> None:
    assert map_response(400, graph_error("131047")).error_code == "131047"


def test_the_detail_says_what_meta_said_and_how_to_trace_it() -> None:
    detail = map_response(400, graph_error(131047, error_subcode=2494010)).detail or ""

    assert "re-engagement" in detail
    assert "Some details." in detail
    assert "subcode 2494010" in detail
    assert "fbtrace_id AbCdEf123" in detail
    assert detail.startswith("HTTP 400")


def test_a_long_detail_is_cut() -> None:
    body = json.dumps({"error": {"code": 100, "message": "x" * 5000}}).encode()

    assert len(map_response(400, body).detail or "") == 500


# --- other answers ---------------------------------------------------------------------------


def test_an_accepted_message_is_sent_with_its_wamid() -> None:
    body = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+5511987654321", "wa_id": "5511987654321"}],
        "messages": [{"id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}],
    }

    result = map_response(200, json.dumps(body))

    assert result == SendResult(
        "sent", provider_message_id="wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    )


def test_a_template_held_for_quality_assessment_is_sent_and_says_so() -> None:
    body = {"messages": [{"id": "wamid.A", "message_status": "held_for_quality_assessment"}]}

    result = map_response(200, json.dumps(body))

    assert (result.status, result.provider_message_id) == ("sent", "wamid.A")
    assert result.detail == "held_for_quality_assessment"


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"messages": []}', b'{"messages": [{"id": ""}]}', b"{}"],
)
def test_a_success_without_a_message_id_is_unknown(body: bytes) -> None:
    result = map_response(200, body)

    assert result.status == "unknown"
    assert result.detail == "HTTP 200 without a message id"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("body", [b"", b"<html>Bad Gateway</html>", b'{"error": "boom"}'])
def test_a_server_error_without_a_graph_error_is_unknown(status: int, body: bytes) -> None:
    assert map_response(status, body).status == "unknown"


@pytest.mark.parametrize("status", [301, 302, 307, 100])
def test_an_answer_we_never_asked_for_is_unknown(status: int) -> None:
    assert map_response(status, b"").status == "unknown"


@pytest.mark.parametrize(
    ("status", "retryable", "pause_channel"),
    [
        (400, False, False),
        (401, False, True),
        (403, False, True),
        (408, True, False),
        (413, False, False),
        (429, True, False),
    ],
)
def test_a_client_error_without_a_graph_error_fails(
    status: int, retryable: bool, pause_channel: bool
) -> None:
    result = map_response(status, b"<html>nope</html>")

    assert (result.status, result.error_code) == ("failed", f"http_{status}")
    assert (result.retryable, result.pause_channel) == (retryable, pause_channel)


# --- exceptions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectTimeoutError(None, "Connection to graph.facebook.com timed out."),
        NewConnectionError(None, "Failed to establish a new connection: refused"),
        NameResolutionError("graph.facebook.com", None, OSError("no such host")),
    ],
    ids=["connect-timeout", "refused", "dns"],
)
def test_a_request_that_never_left_fails_and_may_be_retried(exc: Exception) -> None:
    result = outcome_of_exception(exc)

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "connect_error",
        True,
    )


def test_a_certificate_that_fails_verification_fails_and_may_be_retried() -> None:
    exc = SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))

    result = outcome_of_exception(exc)

    assert (result.status, result.error_code, result.retryable) == ("failed", "tls_error", True)


@pytest.mark.parametrize(
    "exc",
    [
        ReadTimeoutError(None, "/v21.0/1/messages", "Read timed out."),
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer")),
        SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
        OSError("something else"),
        RuntimeError("a bug below us"),
    ],
    ids=["read-timeout", "reset", "tls-eof", "os-error", "other"],
)
def test_a_failure_after_the_request_may_have_left_is_unknown(exc: Exception) -> None:
    result = outcome_of_exception(exc)

    assert result.status == "unknown"
    assert result.retryable is None
    assert type(exc).__name__ in (result.detail or "")


# --- TokenCache ------------------------------------------------------------------------------


class FakeSecrets:
    """Secrets Manager by ARN, counting fetches; a value may be an exception to raise."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.fetches: list[tuple[str, object]] = []

    def __call__(self, arn: str, client: object) -> dict[str, Any]:
        self.fetches.append((arn, client))
        value = self.values[arn]
        if isinstance(value, Exception):
            raise value
        return dict(value)


def test_a_token_is_fetched_once_per_secret_and_then_cached() -> None:
    secrets = FakeSecrets({"arn:a": {"accessToken": "EAA-a"}, "arn:b": {"accessToken": "EAA-b"}})
    client = object()
    tokens = TokenCache(secrets, client=client)

    assert [tokens("arn:a"), tokens("arn:a"), tokens("arn:b")] == ["EAA-a", "EAA-a", "EAA-b"]
    assert secrets.fetches == [("arn:a", client), ("arn:b", client)]


def test_an_invalidated_token_is_fetched_again() -> None:
    secrets = FakeSecrets({"arn:a": {"accessToken": "EAA-old"}})
    tokens = TokenCache(secrets)
    tokens("arn:a")
    secrets.values["arn:a"] = {"accessToken": "EAA-new"}

    tokens.invalidate("arn:a")
    tokens.invalidate("arn:never-fetched")

    assert tokens("arn:a") == "EAA-new"
    assert len(secrets.fetches) == 2


def test_a_token_older_than_its_max_age_is_fetched_again() -> None:
    secrets = FakeSecrets({"arn:a": {"accessToken": "EAA-1"}})
    now = [1000.0]
    tokens = TokenCache(secrets, max_age_s=900, clock=lambda: now[0])
    tokens("arn:a")

    now[0] += 899
    tokens("arn:a")
    now[0] += 1
    tokens("arn:a")

    assert len(secrets.fetches) == 2


@pytest.mark.parametrize("secret", [{}, {"accessToken": ""}, {"accessToken": 42}, {"token": "x"}])
def test_a_secret_without_an_access_token_is_a_settings_error(secret: dict[str, Any]) -> None:
    tokens = TokenCache(FakeSecrets({"arn:a": secret}))

    with pytest.raises(SettingsError, match=re.escape('arn:a has no accessToken: store {"acc')):
        tokens("arn:a")


# --- WhatsAppSender without a socket ---------------------------------------------------------


class Answer:
    """What a pool returns: a status and the body bytes."""

    def __init__(self, status: int, data: bytes) -> None:
        self.status = status
        self.data = data


class FakePool:
    """A PoolManager stand-in: records each request and returns (or raises) what it is given."""

    def __init__(self, *outcomes: Answer | Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        self.calls.append({"method": method, "url": url, **kwargs})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def clear(self) -> None:
        pass


def sender_with(pool: FakePool, secrets: FakeSecrets | None = None) -> WhatsAppSender:
    secrets = secrets or FakeSecrets({SECRET_ARN: {"accessToken": "EAA-token"}})
    return WhatsAppSender(GRAPH, VERSION, TokenCache(secrets), pool=pool)


def test_the_sender_asks_for_no_retries_no_redirects_and_explicit_timeouts() -> None:
    pool = FakePool(Answer(200, b'{"messages": [{"id": "wamid.A"}]}'))

    result = sender_with(pool).send(dispatch())

    assert result == SendResult("sent", provider_message_id="wamid.A")
    (call,) = pool.calls
    assert (call["retries"], call["redirect"]) == (False, False)
    assert (call["timeout"].connect_timeout, call["timeout"].read_timeout) == (3.0, 10.0)
    assert call["headers"]["Authorization"] == "Bearer EAA-token"


def test_a_dispatch_that_cannot_be_sent_fails_before_any_token_or_call() -> None:
    pool = FakePool()
    secrets = FakeSecrets({})

    result = sender_with(pool, secrets).send(dispatch(sender="not-an-id"))

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "invalid_request",
        False,
    )
    assert (pool.calls, secrets.fetches) == ([], [])


def test_a_dispatch_without_a_secret_fails_and_pauses_the_channel() -> None:
    pool = FakePool()

    result = sender_with(pool).send(dispatch(secret_arn=None))

    assert (result.status, result.error_code, result.pause_channel) == (
        "failed",
        "token_unavailable",
        True,
    )
    assert pool.calls == []


def test_a_malformed_secret_fails_without_a_retry_and_pauses_the_channel() -> None:
    pool = FakePool()

    result = sender_with(pool, FakeSecrets({SECRET_ARN: {"token": "x"}})).send(dispatch())

    assert (result.status, result.retryable, result.pause_channel) == ("failed", False, True)
    assert pool.calls == []


def test_an_unreachable_secrets_manager_fails_and_may_be_retried() -> None:
    pool = FakePool()
    secrets = FakeSecrets({SECRET_ARN: ConnectionError("secretsmanager unreachable")})

    result = sender_with(pool, secrets).send(dispatch())

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "token_unavailable",
        True,
    )
    assert pool.calls == []


def test_the_recipients_number_never_appears_in_a_result() -> None:
    echo = graph_error(131026, error_data={"details": "Cannot deliver to 5511987654321."})
    pool = FakePool(Answer(400, echo), OSError("no route to +5511987654321"))
    sender = sender_with(pool)

    results = [sender.send(dispatch()), sender.send(dispatch())]

    for result in results:
        assert "5511987654321" not in (result.detail or "")
        assert "+55*******4321" in (result.detail or "")


def test_a_401_drops_the_cached_token_and_is_not_resent() -> None:
    secrets = FakeSecrets({SECRET_ARN: {"accessToken": "EAA-token"}})
    pool = FakePool(Answer(401, b""), Answer(200, b'{"messages": [{"id": "wamid.B"}]}'))
    sender = sender_with(pool, secrets)

    first = sender.send(dispatch())
    second = sender.send(dispatch())

    assert (first.status, first.error_code, first.pause_channel) == ("failed", "http_401", True)
    assert second.status == "sent"
    assert len(pool.calls) == 2
    assert len(secrets.fetches) == 2


def test_an_unusable_endpoint_is_refused_when_the_sender_is_built() -> None:
    with pytest.raises(SettingsError, match="WHATSAPP_GRAPH_URL"):
        WhatsAppSender("http://graph.facebook.com", VERSION, TokenCache(FakeSecrets({})))
