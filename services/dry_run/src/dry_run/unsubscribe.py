"""Signed one-click unsubscribe tokens (RFC 8058), shared by the senders and the inbound webhook.

A token names a tenant, a lead and a channel, and proves that we issued it: the senders put it
in every email's ``List-Unsubscribe`` URL, the webhook verifies it before it writes an
``opt_outs`` row. Its shape is ``<payload>.<mac>``, both URL-safe base64 without padding:

- payload: ``v1``, tenant id, lead id, channel and the issue time (Unix seconds), joined by
  ``|``. Only ids travel in clear (no address, no name, no secret);
- mac: HMAC-SHA256, under the ``signingKey`` of ``UNSUBSCRIBE_SECRET_ARN``, of a context label
  and the payload's bytes, compared in constant time.

Any token that was not issued under the key as it is (forged, altered, truncated, padded,
re-encoded, another version) raises :class:`InvalidUnsubscribeTokenError`. A token does not
expire: an unsubscribe link must keep working long after the email was sent.

The standard library has every primitive; what is written here is only the token's layout and
its strict parsing (``base64.urlsafe_b64decode`` silently skips characters outside its
alphabet, so it would accept altered tokens).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dry_run.exceptions import InvalidUnsubscribeTokenError

VERSION = "v1"
# Binds the MAC to this use, should the same key ever sign anything else.
_CONTEXT = b"micro-agent/unsubscribe\x00"
_SEPARATOR = "|"
# The tenant-id rule (events.TENANT_ID_PATTERN) widened to every id we sign: lead ids are
# UUIDs. Neither the separator nor the token's '.' can appear in an id.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
CHANNELS = frozenset({"whatsapp", "email", "calendar"})
# HMAC-SHA256 keys shorter than this are guessable; RFC 2104 recommends at least the output size.
MIN_KEY_BYTES = 16
_MAC_BYTES = hashlib.sha256().digest_size
# Far more than any token we issue; refuses to hash megabytes sent by a stranger.
_MAX_TOKEN_CHARS = 512
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class UnsubscribeClaim(NamedTuple):
    """What a valid token proves: this lead of this tenant asked to stop on this channel."""

    tenant_id: str
    lead_id: str
    channel: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode unpadded URL-safe base64, refusing anything but its one canonical form."""
    if "=" in text:
        raise InvalidUnsubscribeTokenError("padded base64 in the unsubscribe token")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidUnsubscribeTokenError("malformed base64 in the unsubscribe token") from exc
    # Unused low bits in the last character decode to the same bytes; only one spelling is ours.
    if _b64encode(raw) != text:
        raise InvalidUnsubscribeTokenError("non-canonical base64 in the unsubscribe token")
    return raw


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the unsubscribe signing key must be at least {MIN_KEY_BYTES} bytes; "
            "check signingKey in the secret named by UNSUBSCRIBE_SECRET_ARN"
        )


def _mac(payload: bytes, key: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + payload, hashlib.sha256).digest()


def sign(tenant_id: str, lead_id: str, channel: str, *, key: bytes, issued_at: int) -> str:
    """The token for this tenant, lead and channel, signed with ``key``.

    Raises ValueError for an id outside ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``, an unknown channel,
    a negative ``issued_at`` or a key shorter than 16 bytes.
    """
    _check_key(key)
    for name, value in (("tenant_id", tenant_id), ("lead_id", lead_id)):
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise ValueError(f"{name} {value!r} cannot be signed: use 1-64 letters, digits, - or _")
    if channel not in CHANNELS:
        raise ValueError(f"channel {channel!r} is not one of {sorted(CHANNELS)}")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int) or issued_at < 0:
        raise ValueError(f"issued_at must be Unix seconds, got {issued_at!r}")
    payload = _SEPARATOR.join((VERSION, tenant_id, lead_id, channel, str(issued_at)))
    raw = payload.encode("ascii")
    return f"{_b64encode(raw)}.{_b64encode(_mac(raw, key))}"


def verify(token: str, *, key: bytes) -> UnsubscribeClaim:
    """The tenant, lead and channel a token names, once its MAC is proven ours.

    Raises InvalidUnsubscribeTokenError for any token we did not issue under ``key``, and
    ValueError (a configuration error, not the caller's) for a key shorter than 16 bytes.
    """
    _check_key(key)
    if not isinstance(token, str) or not token.isascii() or len(token) > _MAX_TOKEN_CHARS:
        raise InvalidUnsubscribeTokenError("the unsubscribe token is not a short ASCII string")
    encoded_payload, dot, encoded_mac = token.partition(".")
    if not dot or not encoded_payload or not encoded_mac:
        raise InvalidUnsubscribeTokenError("the unsubscribe token is not <payload>.<mac>")
    payload = _b64decode(encoded_payload)
    given_mac = _b64decode(encoded_mac)
    # Compare before reading the payload: nothing unauthenticated is parsed.
    if len(given_mac) != _MAC_BYTES or not hmac.compare_digest(_mac(payload, key), given_mac):
        raise InvalidUnsubscribeTokenError("the unsubscribe token's signature does not match")
    # Authentic from here on: a failure below means a token from an incompatible version.
    try:
        fields = payload.decode("ascii").split(_SEPARATOR)
    except UnicodeDecodeError as exc:
        raise InvalidUnsubscribeTokenError("the unsubscribe token's payload is not ASCII") from exc
    if len(fields) != 5 or fields[0] != VERSION:
        raise InvalidUnsubscribeTokenError("the unsubscribe token has an unknown layout")
    _, tenant_id, lead_id, channel, _issued_at = fields
    if not (_ID.fullmatch(tenant_id) and _ID.fullmatch(lead_id) and channel in CHANNELS):
        raise InvalidUnsubscribeTokenError("the unsubscribe token names an invalid id")
    return UnsubscribeClaim(tenant_id, lead_id, channel)


def unsubscribe_url(base_url: str, token: str) -> str:
    """``base_url`` (``UNSUBSCRIBE_URL``) with the token as its ``token`` query parameter.

    RFC 8058 requires HTTPS for one-click unsubscribe; plain HTTP is accepted only for a local
    host (tests, a developer's machine). Raises ValueError for any other URL.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOCAL_HOSTS):
        raise ValueError(f"UNSUBSCRIBE_URL must be an https:// URL, got {base_url!r}")
    if not host or parts.fragment or parts.username or parts.password:
        raise ValueError(f"UNSUBSCRIBE_URL must be a plain https://host/path URL, got {base_url!r}")
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name != "token"
    ]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), ""))
