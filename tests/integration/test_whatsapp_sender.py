"""The WhatsApp sender on a real socket, against the fake Graph API (devtools/fake_graph.py).

No PostgreSQL here: these share the ``integration`` marker because they open real sockets.
Timeouts are short (0.5 s), so a slow or dropped answer costs well under a second.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import urllib3

from devtools.fake_graph import FakeGraph, running_fake_graph
from dry_run.senders import Content, Dispatch, SendResult
from dry_run.senders.whatsapp import TokenCache, WhatsAppSender, build_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "EAA-fake-graph-token"
VERSION = "v21.0"
PHONE_NUMBER_ID = "106540352242922"
SECRET_ARN = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:wa-acme-AbCdEf"
TIMEOUT_S = 0.5


def dispatch(**changes: Any) -> Dispatch:
    """A WhatsApp template dispatch, changed as given."""
    base = Dispatch(
        dispatch_key="acme:lead-42:whatsapp:first_contact:2026-03-02",
        tenant_id="acme",
        lead_id="lead-42",
        channel="whatsapp",
        template="first_contact",
        recipient="+5511987654321",
        sender=PHONE_NUMBER_ID,
        content=Content(language="pt_BR", parameters=("Ana",)),
        secret_arn=SECRET_ARN,
    )
    return replace(base, **changes)


class CountingSecrets:
    """Secrets Manager holding one access token at a time, counting the fetches."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.fetches = 0

    def __call__(self, arn: str, client: object) -> dict[str, str]:
        assert arn == SECRET_ARN
        self.fetches += 1
        return {"accessToken": self.token}


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with running_fake_graph(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def secrets() -> CountingSecrets:
    return CountingSecrets(TOKEN)


def new_sender(graph_url: str, secrets: CountingSecrets) -> WhatsAppSender:
    return WhatsAppSender(
        graph_url,
        VERSION,
        TokenCache(secrets),
        connect_timeout_s=TIMEOUT_S,
        read_timeout_s=TIMEOUT_S,
    )


@pytest.fixture
def sender(graph: FakeGraph, secrets: CountingSecrets) -> Iterator[WhatsAppSender]:
    built = new_sender(graph.url, secrets)
    yield built
    built.close()


@pytest.mark.parametrize(
    "message",
    [
        dispatch(),
        dispatch(template=None, content=Content(body="Oi Ana, tudo bem?")),
    ],
    ids=["template", "session"],
)
def test_a_message_is_posted_with_the_bearer_token_and_sent_with_its_wamid(
    graph: FakeGraph, sender: WhatsAppSender, message: Dispatch
) -> None:
    result = sender.send(message)

    (request,) = graph.requests
    assert request.path == f"/v21.0/{PHONE_NUMBER_ID}/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    _, expected = build_request(message, graph_url=graph.url, api_version=VERSION)
    assert request.json == expected
    assert result == SendResult("sent", provider_message_id=graph.message_ids[0])
    assert (result.provider_message_id or "").startswith("wamid.")


@pytest.mark.parametrize(
    ("code", "http_status", "expected"),
    [
        (131047, 400, ("131047", False, False, False)),
        (130429, 429, ("130429", True, False, False)),
        (131000, 500, ("131000", True, False, False)),
        (131026, 400, ("131026", False, False, True)),
        (131050, 400, ("131050", False, False, True)),
        (131048, 429, ("131048", False, True, False)),
        (368, 403, ("368", False, True, False)),
        (132001, 404, ("132001", False, False, False)),
        (999999, 400, ("999999", False, False, False)),
    ],
)
def test_an_error_code_fails_with_its_flags_end_to_end(
    graph: FakeGraph,
    sender: WhatsAppSender,
    code: int,
    http_status: int,
    expected: tuple[str, bool, bool, bool],
) -> None:
    graph.script(error_code=code)

    result = sender.send(dispatch())

    assert result.status == "failed"
    assert (result.error_code, result.retryable, result.pause_channel, result.unreachable) == (
        expected
    )
    assert f"HTTP {http_status}" in (result.detail or "")
    assert len(graph.requests) == 1


def test_a_server_error_without_a_graph_error_is_unknown(
    graph: FakeGraph, sender: WhatsAppSender
) -> None:
    graph.script(http_status=502, raw_body=b"<html><body>Bad Gateway</body></html>")

    assert sender.send(dispatch()).status == "unknown"


def test_a_success_without_a_message_id_is_unknown(
    graph: FakeGraph, sender: WhatsAppSender
) -> None:
    graph.script(http_status=200, raw_body=b'{"messaging_product": "whatsapp"}')

    result = sender.send(dispatch())

    assert (result.status, result.detail) == ("unknown", "HTTP 200 without a message id")


def test_an_answer_slower_than_the_read_timeout_is_unknown_and_never_resent(
    secrets: CountingSecrets,
) -> None:
    with running_fake_graph(token=TOKEN) as graph:
        sender = new_sender(graph.url, secrets)
        graph.script(delay_s=5)
        started = time.monotonic()

        result = sender.send(dispatch())

        elapsed = time.monotonic() - started
        sender.close()
    # The fake has stopped: nothing more can arrive.
    assert result.status == "unknown"
    assert "ReadTimeoutError" in (result.detail or "")
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1
    assert len(graph.requests) == 1


@pytest.mark.parametrize("drop", ["reset", "close"])
def test_a_connection_dropped_after_the_body_is_unknown_and_never_resent(
    secrets: CountingSecrets, drop: Any
) -> None:
    with running_fake_graph(token=TOKEN) as graph:
        sender = new_sender(graph.url, secrets)
        graph.script(drop=drop)

        result = sender.send(dispatch())

        sender.close()
    assert result.status == "unknown"
    assert "ProtocolError" in (result.detail or "")
    assert len(graph.requests) == 1
    assert graph.requests[0].json["biz_opaque_callback_data"] == dispatch().dispatch_key


def test_nothing_listening_fails_with_a_connect_error_that_may_be_retried(
    secrets: CountingSecrets,
) -> None:
    # Bound but not listening: connecting is refused, and no one else can take the port.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        sender = new_sender(f"http://127.0.0.1:{port}", secrets)

        result = sender.send(dispatch())

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "connect_error",
        True,
    )
    assert "NewConnectionError" in (result.detail or "")


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full queue")
def test_a_connect_timeout_fails_with_a_connect_error_that_may_be_retried(
    secrets: CountingSecrets,
) -> None:
    # A listener whose accept queue is full: Linux drops the next SYN, so connect() times out.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.1)
        try:
            result = new_sender(f"http://127.0.0.1:{port}", secrets).send(dispatch())
        finally:
            for filler in fillers:
                filler.close()

    assert (result.status, result.error_code, result.retryable) == (
        "failed",
        "connect_error",
        True,
    )
    assert "ConnectTimeoutError" in (result.detail or "")


def test_a_rejected_token_is_fetched_again_for_the_next_send_not_resent(
    graph: FakeGraph, sender: WhatsAppSender, secrets: CountingSecrets
) -> None:
    secrets.token = "EAA-revoked"

    first = sender.send(dispatch())
    secrets.token = TOKEN  # someone fixed the secret
    second = sender.send(dispatch())
    third = sender.send(dispatch())

    assert (first.status, first.error_code, first.pause_channel) == ("failed", "190", True)
    assert (second.status, third.status) == ("sent", "sent")
    assert secrets.fetches == 2  # after the 190 only; the third send used the cached token
    assert [r.headers["Authorization"] for r in graph.requests] == [
        "Bearer EAA-revoked",
        f"Bearer {TOKEN}",
        f"Bearer {TOKEN}",
    ]


def test_sends_reuse_one_pooled_connection(graph: FakeGraph, sender: WhatsAppSender) -> None:
    results = [sender.send(dispatch(dispatch_key=f"k-{n}")) for n in range(3)]

    assert [result.status for result in results] == ["sent", "sent", "sent"]
    assert graph.connections_opened == 1
    assert {request.connection for request in graph.requests} == {1}


def test_a_recipients_script_wins_over_the_global_one_and_runs_out(
    graph: FakeGraph, sender: WhatsAppSender
) -> None:
    graph.script(error_code=131047)
    graph.script("+55 11 91234-5678", times=1)  # accept this one, once

    results = [
        sender.send(dispatch(recipient="+5511912345678")),
        sender.send(dispatch(recipient="+5511912345678")),
        sender.send(dispatch()),
    ]

    assert [(r.status, r.error_code) for r in results] == [
        ("sent", None),
        ("failed", "131047"),
        ("failed", "131047"),
    ]


def test_the_fake_refuses_what_the_graph_api_refuses(graph: FakeGraph) -> None:
    pool = urllib3.PoolManager(retries=False)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    good_path = f"{graph.url}/v21.0/{PHONE_NUMBER_ID}/messages"

    unknown_path = pool.request("POST", f"{graph.url}/v21.0/x/y", body=b"{}", headers=headers)
    bad_body = pool.request(
        "POST", good_path, body=json.dumps({"to": "+5511987654321"}), headers=headers
    )
    no_token = pool.request("POST", good_path, body=b"{}", headers={"Content-Type": "x"})
    pool.clear()

    assert (unknown_path.status, unknown_path.json()["error"]["error_subcode"]) == (400, 33)
    assert (bad_body.status, bad_body.json()["error"]["code"]) == (400, 100)
    assert "messaging_product" in bad_body.json()["error"]["error_data"]["details"]
    assert (no_token.status, no_token.json()["error"]["code"]) == (401, 190)
    assert len(graph.requests) == 3
