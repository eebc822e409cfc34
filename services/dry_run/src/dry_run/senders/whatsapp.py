"""WhatsApp Cloud API adapter: one ``POST {graph}/{version}/{phone number id}/messages`` each.

Three pure parts and a socket (shared/STYLE.md, "A provider adapter is small"):

- ``build_request`` turns a dispatch into the URL and JSON body Meta documents: a template
  message under the decision's template name, or a session message as ``type: text``, always
  with the dispatch key as ``biz_opaque_callback_data`` (Meta echoes it in every status
  webhook, which is how ``unknown`` rows are resolved).
- ``ERRORS`` is the table, as data, of what each Meta error code means for the ledger.
- ``map_response`` and ``outcome_of_exception`` turn an answer, or the lack of one, into a
  ``SendResult``: ``sent`` only with a message id, ``failed`` only when Meta said no or
  nothing reached it, ``unknown`` whenever Meta may have accepted the message.

``WhatsAppSender.send`` makes at most one provider call per dispatch: urllib3 with retries and
redirects off, explicit connect and read timeouts, and a pool kept for the container's life.
It never logs; the token and the recipient's full number appear in no result either.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, SSLError
from urllib3.util.ssl_match_hostname import CertificateError

from dry_run.contacts import mask_phone
from dry_run.exceptions import SettingsError
from dry_run.senders import Dispatch, SendResult
from pgconn import DatabaseConfigError, fetch_secret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_LANGUAGE = "pt_BR"
# Meta's limits: biz_opaque_callback_data and a text message's body.
MAX_CALLBACK_DATA = 512
MAX_TEXT_BODY = 4096
# Longer provider messages are cut: a result's detail is a hint for a person, not a payload.
MAX_DETAIL = 500
DEFAULT_TOKEN_MAX_AGE_S = 900.0

_API_VERSION = re.compile(r"^v\d+\.\d+$")
# A Graph object id: digits only, so it is safe as a path segment.
# A business phone number id as the WhatsApp Manager shows it (tenant_senders.sender).
PHONE_NUMBER_ID = re.compile(r"^\d{1,32}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# The bearer token may travel without TLS only to this machine (the fake Graph API).
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ErrorRule(NamedTuple):
    """What one Meta error code means for the ledger."""

    meaning: str
    # The same request may succeed later (the ledger may claim it again, 3 attempts in all).
    retryable: bool = False
    # Every send on the tenant's channel will fail the same way: stop the channel.
    pause_channel: bool = False
    # This lead cannot be reached on WhatsApp (an opt_outs row).
    unreachable: bool = False


# Meta's error codes (Cloud API error-code reference and Graph API error handling). Codes come
# back synchronously in the send's answer or later in a status webhook; the table serves both.
ERRORS: Mapping[int, ErrorRule] = MappingProxyType(
    {
        # Throttled or a transient fault on Meta's side: nothing was sent, try again later.
        4: ErrorRule("the app's API call rate limit", retryable=True),
        80007: ErrorRule("the WhatsApp Business Account's rate limit", retryable=True),
        130429: ErrorRule("Cloud API throughput reached", retryable=True),
        131056: ErrorRule("pair rate limit: too many messages to this number", retryable=True),
        2: ErrorRule("Graph API service temporarily down", retryable=True),
        131000: ErrorRule("something went wrong (unknown error)", retryable=True),
        131016: ErrorRule("a service is temporarily unavailable", retryable=True),
        131057: ErrorRule("the business account is in maintenance mode", retryable=True),
        133004: ErrorRule("server temporarily unavailable", retryable=True),
        # This message to this lead.
        131047: ErrorRule("re-engagement: more than 24 h since the lead's last message"),
        131049: ErrorRule("Meta chose not to deliver (per-user marketing limit)"),
        131026: ErrorRule("undeliverable to this number", unreachable=True),
        131050: ErrorRule("the lead stopped marketing messages from us", unreachable=True),
        100: ErrorRule("invalid parameter"),
        # The channel: every further send would fail (or hurt the number's standing).
        0: ErrorRule("authentication failed", pause_channel=True),
        190: ErrorRule("access token expired or invalid", pause_channel=True),
        10: ErrorRule("permission not granted or removed", pause_channel=True),
        368: ErrorRule("temporarily blocked for policy violations", pause_channel=True),
        131031: ErrorRule("the business account is locked", pause_channel=True),
        131048: ErrorRule("spam rate limit: too many messages blocked", pause_channel=True),
    }
)
# Families of codes, checked after ERRORS.
ERROR_RANGES: tuple[tuple[range, ErrorRule], ...] = (
    (range(200, 300), ErrorRule("API permission not granted or removed", pause_channel=True)),
    (range(132000, 133000), ErrorRule("template problem (missing, paused or its parameters)")),
)
# A code the table does not know is a definite rejection for a reason we cannot judge: it is
# not retried, since an automatic retry of an unexplained rejection may repeat it (and hurt the
# number's quality rating) until someone adds the code to the table.
UNKNOWN_ERROR = ErrorRule("a code this table does not know (not retried)")
# Codes that say the bearer token is bad: the cached token is dropped.
AUTH_ERROR_CODES = frozenset({"0", "190"})


def rule_for(code: int) -> ErrorRule:
    """The rule for a Meta error code: exact codes first, then families, else UNKNOWN_ERROR."""
    rule = ERRORS.get(code)
    if rule is not None:
        return rule
    for codes, family_rule in ERROR_RANGES:
        if code in codes:
            return family_rule
    return UNKNOWN_ERROR


def check_endpoint(graph_url: str, api_version: str) -> None:
    """Raise SettingsError unless the Graph URL and API version can be used as given."""
    parts = urlsplit(graph_url)
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    )
    if not (secure and parts.hostname) or parts.query or parts.fragment:
        raise SettingsError(
            f"WHATSAPP_GRAPH_URL={graph_url!r} is not usable: give an https:// URL such as "
            f"{DEFAULT_GRAPH_URL} (http:// only to 127.0.0.1 or localhost)"
        )
    if not _API_VERSION.match(api_version):
        raise SettingsError(
            f"WHATSAPP_API_VERSION={api_version!r} is not a Graph API version: give one such "
            "as v21.0"
        )


def build_request(
    dispatch: Dispatch, *, graph_url: str, api_version: str
) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body of the Cloud API call that sends this dispatch.

    Raises ValueError (SettingsError for the endpoint) when the dispatch cannot be sent as is;
    nothing in it is guessed.
    """
    check_endpoint(graph_url, api_version)
    key = dispatch.dispatch_key
    if dispatch.channel != "whatsapp":
        raise ValueError(f"dispatch {key} is on channel {dispatch.channel!r}, not whatsapp")
    if not PHONE_NUMBER_ID.match(dispatch.sender):
        raise ValueError(
            f"dispatch {key}: sender {dispatch.sender!r} is not a WhatsApp phone number id "
            "(digits only, from the WhatsApp Manager)"
        )
    if not _E164.match(dispatch.recipient):
        raise ValueError(
            f"dispatch {key}: recipient {mask_phone(dispatch.recipient)} is not an E.164 number"
        )
    if not key or len(key) > MAX_CALLBACK_DATA:
        raise ValueError(
            f"dispatch key {key[:40]!r} must have 1 to {MAX_CALLBACK_DATA} characters "
            "(Meta's limit for biz_opaque_callback_data)"
        )
    content = dispatch.content
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        # With the '+': Meta prepends the business number's country code to a number without
        # one, which misdelivers (Cloud API docs, "WhatsApp user phone number formats").
        "to": dispatch.recipient,
    }
    if dispatch.template is not None:
        template: dict[str, Any] = {
            "name": dispatch.template,
            "language": {"code": content.language or DEFAULT_LANGUAGE},
        }
        if content.parameters:
            parameters = [{"type": "text", "text": value} for value in content.parameters]
            template["components"] = [{"type": "body", "parameters": parameters}]
        body |= {"type": "template", "template": template}
    else:
        if not content.body or len(content.body) > MAX_TEXT_BODY:
            raise ValueError(
                f"dispatch {key}: a session message needs a body of 1 to {MAX_TEXT_BODY} "
                f"characters, not {len(content.body)}"
            )
        body |= {"type": "text", "text": {"body": content.body}}
    body["biz_opaque_callback_data"] = key
    url = f"{graph_url.rstrip('/')}/{api_version}/{dispatch.sender}/messages"
    return url, body


def map_response(status_code: int, body: bytes | str) -> SendResult:
    """What an HTTP answer from the Cloud API means for the ledger."""
    payload = _json_object(body)
    error = payload.get("error") if payload is not None else None
    if isinstance(error, Mapping) and (code := _error_code(error)) is not None:
        rule = rule_for(code)
        return SendResult(
            "failed",
            error_code=str(code),
            retryable=rule.retryable,
            pause_channel=rule.pause_channel,
            unreachable=rule.unreachable,
            detail=_cut(f"HTTP {status_code}, {rule.meaning}: {_describe(error)}"),
        )
    if 200 <= status_code < 300:
        message_id, message_status = _accepted_message(payload)
        if message_id:
            detail = None if message_status in (None, "accepted") else message_status
            return SendResult("sent", provider_message_id=message_id, detail=detail)
        # Meta took the request but named no message: it may or may not go out.
        return SendResult("unknown", detail=f"HTTP {status_code} without a message id")
    if 400 <= status_code < 500:
        # A client error without Graph's error body (a proxy, a gateway): nothing was sent.
        return SendResult(
            "failed",
            error_code=f"http_{status_code}",
            retryable=status_code in (408, 429),
            pause_channel=status_code in (401, 403),
            detail=f"HTTP {status_code} without a Graph API error",
        )
    # 5xx without an error body, or a 1xx/3xx we never asked for: the outcome is unknowable.
    return SendResult("unknown", detail=f"HTTP {status_code} without a Graph API error")


def outcome_of_exception(exc: BaseException) -> SendResult:
    """What a failed call means: ``failed`` only when the request cannot have reached Meta.

    With retries off, urllib3 2.x raises its own exceptions unwrapped. ``ConnectTimeoutError``
    (and its subclasses ``NewConnectionError``, ``NameResolutionError``) comes from opening
    the TCP connection, and a certificate that fails verification from the TLS handshake:
    no request byte was sent. Anything else (``ReadTimeoutError``, ``ProtocolError`` for a
    reset or a close, another ``SSLError``) may come after the request was sent, so Meta may
    have accepted it. (A TLS handshake that times out is also a ``ReadTimeoutError``: counted
    as unknown, the safe side.)
    """
    detail = _cut(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ConnectTimeoutError):
        return SendResult("failed", error_code="connect_error", retryable=True, detail=detail)
    if (
        isinstance(exc, SSLError)
        and exc.args
        and isinstance(exc.args[0], ssl.SSLCertVerificationError | CertificateError)
    ):
        return SendResult("failed", error_code="tls_error", retryable=True, detail=detail)
    return SendResult("unknown", detail=detail)


class TokenProvider(Protocol):
    """Bearer tokens by the secret ARN that holds them; a rejected one is invalidated."""

    def __call__(self, secret_arn: str) -> str: ...

    def invalidate(self, secret_arn: str) -> None: ...


class SecretFetcher(Protocol):
    """Fetches a JSON secret (``pgconn.fetch_secret``'s signature)."""

    def __call__(self, arn: str, client: SecretsManagerClient | None, /) -> Mapping[str, Any]: ...


class TokenCache:
    """The tenants' access tokens, each fetched once from Secrets Manager and then cached.

    A secret holds ``{"accessToken": "..."}``. A token is kept until ``invalidate`` (Meta
    rejected it) or until it is ``max_age_s`` old, so that a rotated secret reaches a warm
    container. Safe to share between threads.
    """

    def __init__(
        self,
        fetch: SecretFetcher = fetch_secret,
        *,
        client: SecretsManagerClient | None = None,
        max_age_s: float | None = DEFAULT_TOKEN_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._client = client
        self._max_age_s = max_age_s
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, secret_arn: str) -> str:
        """The token in the secret, fetched when not cached or too old."""
        with self._lock:
            now = self._clock()
            cached = self._tokens.get(secret_arn)
            if cached is not None and (
                self._max_age_s is None or now - cached[1] < self._max_age_s
            ):
                return cached[0]
            token = self._fetch(secret_arn, self._client).get("accessToken")
            if not isinstance(token, str) or not token.strip():
                raise SettingsError(
                    f"secret {secret_arn} has no accessToken: store "
                    '{"accessToken": "<a system user token>"} in it'
                )
            self._tokens[secret_arn] = (token.strip(), now)
            return token.strip()

    def invalidate(self, secret_arn: str) -> None:
        """Forget the secret's token: the next call fetches it again."""
        with self._lock:
            self._tokens.pop(secret_arn, None)


def new_pool(maxsize: int = 8) -> urllib3.PoolManager:
    """A connection pool for the Graph API, built once per container.

    Warm invocations reuse its TLS connections. Retries are off here, and again on every
    request (an injected pool cannot bring them back).
    """
    return urllib3.PoolManager(num_pools=4, maxsize=maxsize, retries=False)


class WhatsAppSender:
    """Sends a dispatch through the Cloud API: one call at most, never retried below here.

    Built once per container: ``token_provider`` is usually a ``TokenCache``, ``pool`` a
    ``new_pool()`` (the default). The timeouts bound connecting and each wait for data; a
    read timeout makes the outcome ``unknown``, so keep it well above Meta's usual latency.
    """

    def __init__(
        self,
        graph_url: str,
        api_version: str,
        token_provider: TokenProvider,
        *,
        pool: urllib3.PoolManager | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        check_endpoint(graph_url, api_version)
        self._graph_url = graph_url
        self._api_version = api_version
        self._tokens = token_provider
        self._pool = pool if pool is not None else new_pool()
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)

    def send(self, dispatch: Dispatch) -> SendResult:
        """Send the dispatch; ``unknown`` when Meta may have accepted it without saying so."""
        try:
            url, body = build_request(
                dispatch, graph_url=self._graph_url, api_version=self._api_version
            )
        except ValueError as exc:
            return SendResult(
                "failed", error_code="invalid_request", retryable=False, detail=str(exc)
            )
        # Nothing has reached Meta before the request below: a failure so far is `failed`.
        secret_arn = dispatch.secret_arn
        if not secret_arn:
            return SendResult(
                "failed",
                error_code="token_unavailable",
                retryable=False,
                pause_channel=True,
                detail=f"dispatch {dispatch.dispatch_key} names no WhatsApp secret",
            )
        token = self._token(secret_arn)
        if isinstance(token, SendResult):
            return token
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            response = self._pool.request(
                "POST",
                url,
                body=payload,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                retries=False,
                redirect=False,
                timeout=self._timeout,
            )
        except Exception as exc:  # every failure becomes a SendResult
            return _redacted(outcome_of_exception(exc), dispatch.recipient)
        result = map_response(response.status, response.data)
        if response.status == 401 or result.error_code in AUTH_ERROR_CODES:
            # Not resent (one call per dispatch): the next send fetches the token again, so a
            # fixed secret takes effect in a warm container as soon as the channel resumes.
            self._tokens.invalidate(secret_arn)
        return _redacted(result, dispatch.recipient)

    def close(self) -> None:
        """Close the pooled connections (tests; a container keeps them)."""
        self._pool.clear()

    def _token(self, secret_arn: str) -> str | SendResult:
        try:
            return self._tokens(secret_arn)
        except (SettingsError, DatabaseConfigError) as exc:
            # The secret is there but malformed: every send on the channel would fail.
            return SendResult(
                "failed",
                error_code="token_unavailable",
                retryable=False,
                pause_channel=True,
                detail=_cut(str(exc)),
            )
        except Exception as exc:  # Secrets Manager unreachable, throttled, denied, ...
            return SendResult(
                "failed",
                error_code="token_unavailable",
                retryable=True,
                detail=_cut(f"{type(exc).__name__}: {exc}"),
            )


def _json_object(body: bytes | str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _error_code(error: Mapping[str, Any]) -> int | None:
    code = error.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code)
    return None


def _describe(error: Mapping[str, Any]) -> str:
    parts = [str(error.get("message") or "no message")]
    error_data = error.get("error_data")
    if isinstance(error_data, Mapping) and error_data.get("details"):
        parts.append(str(error_data["details"]))
    if error.get("error_subcode") is not None:
        parts.append(f"subcode {error['error_subcode']}")
    if error.get("fbtrace_id"):
        parts.append(f"fbtrace_id {error['fbtrace_id']}")
    return "; ".join(parts)


def _accepted_message(payload: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    messages = payload.get("messages") if payload is not None else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], Mapping):
        return None, None
    message_id = messages[0].get("id")
    message_status = messages[0].get("message_status")
    return (
        message_id if isinstance(message_id, str) and message_id else None,
        message_status if isinstance(message_status, str) else None,
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _redacted(result: SendResult, recipient: str) -> SendResult:
    """The result without the recipient's full number in its detail (Meta may echo it)."""
    digits = re.sub(r"\D", "", recipient)
    if result.detail is None or len(digits) < 7 or digits not in result.detail:
        return result
    masked = mask_phone(recipient) or "***"
    return result._replace(detail=result.detail.replace(recipient, masked).replace(digits, masked))
