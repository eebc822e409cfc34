"""A fake of Meta's Graph API send endpoint, on a real socket on 127.0.0.1, for tests and demos.

It answers ``POST /{version}/{phone number id}/messages`` as the WhatsApp Cloud API does: it
checks the bearer token (401 and error 190 when wrong), validates the body's shape (400 and
error 100 when wrong), records every request it read (path, headers, parsed JSON, which TCP
connection carried it), and accepts the message with a unique ``wamid``. A test scripts what
it answers, for one recipient or for all: an error code (Meta's error JSON, at the HTTP status
Meta's error-code reference gives), a raw answer, a delay (to trip a client's read timeout), or
a dropped connection after the body was read (a reset, or a clean close, with no answer).

    with running_fake_graph(token="t") as graph:
        graph.script(error_code=131047)             # everyone: outside the 24 h window
        graph.script("+5511987654321", delay_s=2)   # this recipient: answer after 2 s
        ...                                          # POST to f"{graph.url}/v21.0/123/messages"
        graph.requests                               # what it received

    python -m devtools.fake_graph --port 8999 --token dev-token   # serve until Ctrl-C

Bounded: it binds to 127.0.0.1 only, reads at most 64 KiB of body, caps a delay at 30 s
(interrupted when it stops), keeps the last 10,000 requests, and closes every open connection
when it stops. Written by hand: we know of no maintained fake of the Graph API on a socket,
and the behaviours the tests need (drop after the body, delay one recipient) are few lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import socket
import struct
import sys
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Literal

DEFAULT_TOKEN = "fake-graph-token"  # noqa: S105 - a test token, not a secret
HOST = "127.0.0.1"
MAX_BODY_BYTES = 64 * 1024
MAX_DELAY_S = 30.0
MAX_RECORDED = 10_000
# An idle keep-alive connection is closed after this long (the client reconnects).
IDLE_TIMEOUT_S = 30.0

_MESSAGES_PATH = re.compile(r"^/(?P<version>v\d+\.\d+)/(?P<phone_number_id>\d+)/messages$")
_SUPPORTED_TYPES = frozenset({"text", "template"})

Drop = Literal["reset", "close"]


@dataclass(frozen=True)
class GraphError:
    """One Cloud API error as Meta documents it: the HTTP status, the title and the details."""

    http_status: int
    title: str
    details: str


# The codes the tests and demos use, with the HTTP status Meta's error-code reference lists
# (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes).
# A code not listed here is answered with 400 and a generic title.
ERRORS: Mapping[int, GraphError] = MappingProxyType(
    {
        0: GraphError(401, "AuthException", "We were unable to authenticate the app user."),
        4: GraphError(429, "API Too Many Calls", "The app has reached its API call rate limit."),
        10: GraphError(
            403, "API Permission Denied", "Permission is either not granted or removed."
        ),
        100: GraphError(400, "Invalid parameter", "The request included an invalid parameter."),
        190: GraphError(401, "Access token has expired", "Your access token has expired."),
        368: GraphError(
            403,
            "Temporarily blocked for policies violations",
            "The WhatsApp Business Account has been restricted for violating a platform policy.",
        ),
        80007: GraphError(
            429, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit."
        ),
        130429: GraphError(429, "Rate limit hit", "Cloud API message throughput has been reached."),
        131000: GraphError(
            500, "Something went wrong", "Message failed to send due to an unknown error."
        ),
        131008: GraphError(400, "Required parameter is missing", "A parameter is missing."),
        131016: GraphError(503, "Service unavailable", "A service is temporarily unavailable."),
        131026: GraphError(400, "Message undeliverable", "Unable to deliver message."),
        131031: GraphError(403, "Account has been locked", "The account has been locked."),
        131047: GraphError(
            400,
            "Re-engagement message",
            "More than 24 hours have passed since the recipient last replied to the sender number.",
        ),
        131048: GraphError(
            429,
            "Spam rate limit hit",
            "Message failed to send because there are restrictions on how many messages can be "
            "sent from this phone number.",
        ),
        131049: GraphError(
            400,
            "This message was not delivered to maintain healthy ecosystem engagement.",
            "In order to maintain a healthy ecosystem engagement, the message failed to be "
            "delivered.",
        ),
        131050: GraphError(
            400,
            "User has stopped marketing messages",
            "This recipient has chosen to stop receiving marketing messages on WhatsApp from "
            "your business.",
        ),
        131056: GraphError(
            429,
            "(Business Account, Consumer Account) pair rate limit hit",
            "Too many messages sent from the sender phone number to the same recipient phone "
            "number in a short period of time.",
        ),
        131057: GraphError(
            500, "Account in maintenance mode", "Business Account is in maintenance mode."
        ),
        132000: GraphError(
            400,
            "Number of parameters does not match the expected number of params",
            "The number of variable parameter values does not match the template.",
        ),
        132001: GraphError(
            404,
            "Template name does not exist in the translation",
            "The template does not exist in the specified language or has not been approved.",
        ),
        132015: GraphError(400, "Template is paused", "Template is paused due to low quality."),
        133004: GraphError(503, "Server temporarily unavailable", "Server is unavailable."),
    }
)


@dataclass(frozen=True)
class Behaviour:
    """What the fake answers to a request (a default ``Behaviour()`` accepts the message)."""

    # Answer with Meta's error JSON for this code (its HTTP status from ERRORS unless given).
    error_code: int | None = None
    error_subcode: int | None = None
    http_status: int | None = None
    # Answer with these bytes as they are (an HTML 502, a 200 without a message id, ...).
    raw_body: bytes | None = None
    # Wait this long after reading the body before answering (or dropping).
    delay_s: float = 0.0
    # Drop the connection after reading the body, answering nothing: "reset" sends a TCP RST,
    # "close" a FIN.
    drop: Drop | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s={self.delay_s} is out of range: use 0 to {MAX_DELAY_S}")
        if self.error_code is not None and self.raw_body is not None:
            raise ValueError("give error_code or raw_body, not both")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake read in full: what a test asserts on."""

    method: str
    path: str
    # Names in Title-Case ("Authorization", "Content-Type").
    headers: Mapping[str, str]
    # The parsed JSON body; None when it was not JSON.
    json: Any
    # The sequence number of the TCP connection that carried it (1 for the first accepted).
    connection: int

    @property
    def recipient(self) -> str | None:
        """The body's ``to``, if any."""
        if isinstance(self.json, dict) and isinstance(self.json.get("to"), str):
            return str(self.json["to"])
        return None


@dataclass
class _Script:
    behaviour: Behaviour
    # How many more requests it applies to; None: until replaced or cleared.
    remaining: int | None


@dataclass
class FakeGraph:
    """The fake's state, shared by its handler threads; tests read and script it."""

    token: str
    url: str = ""
    _requests: deque[RecordedRequest] = field(
        init=False, default_factory=lambda: deque(maxlen=MAX_RECORDED)
    )
    _scripts: dict[str | None, _Script] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _stopping: threading.Event = field(init=False, default_factory=threading.Event)
    _connections_opened: int = field(init=False, default=0)
    _open: set[socket.socket] = field(init=False, default_factory=set)
    _message_ids: deque[str] = field(init=False, default_factory=lambda: deque(maxlen=MAX_RECORDED))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request read so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def message_ids(self) -> list[str]:
        """The ``wamid`` of every message the fake accepted, oldest first (a copy)."""
        with self._lock:
            return list(self._message_ids)

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the fake has accepted."""
        with self._lock:
            return self._connections_opened

    def script(
        self,
        recipient: str | None = None,
        *,
        times: int | None = None,
        error_code: int | None = None,
        error_subcode: int | None = None,
        http_status: int | None = None,
        raw_body: bytes | None = None,
        delay_s: float = 0.0,
        drop: Drop | None = None,
    ) -> None:
        """Script the answer for one recipient (any format of its number), or for everyone.

        A recipient's script wins over the global one. ``times`` limits it to the next N
        requests it matches; without it, it holds until replaced or ``clear_scripts()``.
        """
        if times is not None and times < 1:
            raise ValueError(f"times={times} must be at least 1 (or None: always)")
        behaviour = Behaviour(
            error_code=error_code,
            error_subcode=error_subcode,
            http_status=http_status,
            raw_body=raw_body,
            delay_s=delay_s,
            drop=drop,
        )
        with self._lock:
            self._scripts[_recipient_key(recipient)] = _Script(behaviour, times)

    def clear_scripts(self) -> None:
        """Forget every script: accept every valid message again."""
        with self._lock:
            self._scripts.clear()

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _behaviour_for(self, recipient: str | None) -> Behaviour:
        with self._lock:
            key = _recipient_key(recipient)
            chosen = key if key in self._scripts else None
            script = self._scripts.get(chosen)
            if script is None:
                return Behaviour()
            if script.remaining is not None:
                script.remaining -= 1
                if script.remaining == 0:
                    del self._scripts[chosen]
            return script.behaviour

    def _accept(self, message_id: str) -> None:
        with self._lock:
            self._message_ids.append(message_id)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _opened(self, sock: socket.socket) -> int:
        with self._lock:
            self._connections_opened += 1
            self._open.add(sock)
            return self._connections_opened

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _close_all(self) -> None:
        self._stopping.set()
        with self._lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)


def _recipient_key(recipient: str | None) -> str | None:
    """The digits of a number, so that "+55 11 ..." and "5511..." script the same recipient."""
    if recipient is None:
        return None
    return re.sub(r"\D", "", recipient)


def error_body(code: int, *, subcode: int | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Meta's error JSON for a Cloud API error code."""
    known = ERRORS.get(code, GraphError(400, "Unknown error", f"Error {code}."))
    error: dict[str, Any] = {
        "message": f"(#{code}) {known.title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": known.details},
        "fbtrace_id": f"A{uuid.uuid4().hex[:22]}",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return known.http_status, {"error": error}


def accepted_body(message: Mapping[str, Any]) -> dict[str, Any]:
    """Meta's answer to an accepted message: the contact and a new, unique ``wamid``."""
    to = str(message["to"])
    accepted: dict[str, Any] = {"id": f"wamid.{uuid.uuid4().hex.upper()}"}
    if message.get("type") == "template":
        # Meta adds the template's pacing status to template messages.
        accepted["message_status"] = "accepted"
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": re.sub(r"\D", "", to)}],
        "messages": [accepted],
    }


def body_problem(message: Any) -> str | None:
    """Why a send-message body is not one the Cloud API accepts, or None when it is."""
    if not isinstance(message, dict):
        return "the body is not a JSON object"
    if message.get("messaging_product") != "whatsapp":
        return "messaging_product must be 'whatsapp'"
    if message.get("recipient_type", "individual") != "individual":
        return "recipient_type must be 'individual'"
    to = message.get("to")
    if not isinstance(to, str) or not re.sub(r"\D", "", to):
        return "to must be a phone number"
    opaque = message.get("biz_opaque_callback_data")
    if opaque is not None and (not isinstance(opaque, str) or len(opaque) > 512):
        return "biz_opaque_callback_data must be a string of at most 512 characters"
    kind = message.get("type", "text")
    if kind not in _SUPPORTED_TYPES:
        return f"type {kind!r} is not one this fake supports ({sorted(_SUPPORTED_TYPES)})"
    if kind == "text":
        return _text_problem(message.get("text"))
    return _template_problem(message.get("template"))


def _text_problem(text: Any) -> str | None:
    if not isinstance(text, dict):
        return "text must be an object"
    body = text.get("body")
    if not isinstance(body, str) or not body or len(body) > 4096:
        return "text.body must be a string of 1 to 4096 characters"
    return None


def _template_problem(template: Any) -> str | None:
    if not isinstance(template, dict):
        return "template must be an object"
    if not isinstance(template.get("name"), str) or not template["name"]:
        return "template.name must be a non-empty string"
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        return "template.language.code must be a string"
    components = template.get("components", [])
    if not isinstance(components, list):
        return "template.components must be a list"
    for component in components:
        if not isinstance(component, dict) or not isinstance(component.get("type"), str):
            return "each template component must be an object with a type"
        for parameter in component.get("parameters", []):
            if not isinstance(parameter, dict) or parameter.get("type") != "text":
                return "this fake supports text parameters only"
            if not isinstance(parameter.get("text"), str):
                return "a text parameter must have a string text"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeGraph, port: int) -> None:
        self.fake = fake
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read timeout) or a connection the fake dropped on purpose is
        # expected here, not a failure worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Meta's servers
    server_version = "FakeGraph/1"
    timeout = IDLE_TIMEOUT_S
    server: _Server
    connection_number: int

    def setup(self) -> None:
        super().setup()
        # The status line, headers and body go out in separate writes: without this, Nagle's
        # algorithm and the client's delayed ACK stall every answer on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_number = self.server.fake._opened(self.connection)

    def finish(self) -> None:
        self.server.fake._closed(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded requests are the log

    def do_GET(self) -> None:
        self._answer(*error_body(100))

    def do_POST(self) -> None:
        fake = self.server.fake
        declared = self.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isdigit() else -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._answer(413, {"error": {"message": "body length not accepted", "code": 100}})
            return
        raw = self.rfile.read(length)
        try:
            message: Any = json.loads(raw)
        except ValueError:
            message = None
        request = RecordedRequest(
            method="POST",
            path=self.path,
            headers=MappingProxyType({name.title(): value for name, value in self.headers.items()}),
            json=message,
            connection=self.connection_number,
        )
        fake._record(request)

        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._answer(*error_body(190))
            return
        if _MESSAGES_PATH.match(self.path) is None:
            # Graph's answer to a path it does not know: (#100) with subcode 33.
            self._answer(*error_body(100, subcode=33))
            return
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("application/json"):
            self._answer(*error_body(100))
            return
        problem = body_problem(message)
        if problem is not None:
            status, body = error_body(100)
            body["error"]["error_data"]["details"] = problem
            self._answer(status, body)
            return

        behaviour = fake._behaviour_for(request.recipient)
        if behaviour.delay_s and fake._stopping.wait(behaviour.delay_s):
            self.close_connection = True
            return
        if behaviour.drop is not None:
            self._drop(behaviour.drop)
        elif behaviour.raw_body is not None:
            self._answer_bytes(behaviour.http_status or 200, behaviour.raw_body, "text/html")
        elif behaviour.error_code is not None:
            status, body = error_body(behaviour.error_code, subcode=behaviour.error_subcode)
            self._answer(behaviour.http_status or status, body)
        else:
            accepted = accepted_body(message)
            fake._accept(accepted["messages"][0]["id"])
            self._answer(behaviour.http_status or 200, accepted)

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        self._answer_bytes(status, json.dumps(body).encode(), "application/json; charset=UTF-8")

    def _answer_bytes(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self, how: Drop) -> None:
        self.close_connection = True
        if how == "close":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        # Linger 0: closing sends a RST instead of a FIN. The socket closes for real only when
        # its file objects do, so close them too; the base class flushes wfile after this
        # method returns, so it gets a harmless stand-in.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
        self.wfile = io.BytesIO()


@contextmanager
def running_fake_graph(token: str = DEFAULT_TOKEN, *, port: int = 0) -> Iterator[FakeGraph]:
    """Serve a FakeGraph on 127.0.0.1 (a free port unless given) until the block ends."""
    fake = FakeGraph(token=token)
    server = _Server(fake, port)
    host, bound_port = server.server_address[:2]
    fake.url = f"http://{host!s}:{bound_port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        fake._close_all()
        server.server_close()
        thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the fake until Ctrl-C (for a demo against a local sender)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.fake_graph", description=__doc__)
    parser.add_argument("--port", type=int, default=8999, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token it accepts")
    args = parser.parse_args(argv)
    with running_fake_graph(args.token, port=args.port) as fake:
        print(f"fake Graph API on {fake.url} (token {args.token!r}); Ctrl-C to stop", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print(f"\n{len(fake.requests)} request(s) received", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
