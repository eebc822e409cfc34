"""Meta's webhook signature and the raw body of a Lambda Function URL request."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from inbound.exceptions import InvalidRequestError

SIGNATURE_PREFIX = "sha256="


def verify_meta_signature(raw_body: bytes, header: str | None, app_secret: bytes) -> bool:
    """Tell whether ``X-Hub-Signature-256`` is the app secret's HMAC-SHA256 of the raw body.

    Never raises: whatever a caller on the open internet sends, the answer is a plain no.
    """
    # An empty secret is a misconfiguration; anyone could sign with it, so nothing is trusted.
    if not app_secret or header is None or not header.startswith(SIGNATURE_PREFIX):
        return False
    try:
        given = header[len(SIGNATURE_PREFIX) :].strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    expected = hmac.new(app_secret, raw_body, hashlib.sha256).hexdigest().encode("ascii")
    # Constant time, so that the response time does not leak how much of a forgery was right.
    return hmac.compare_digest(expected, given)


def body_bytes(event_body: str | None, is_base64_encoded: bool) -> bytes:
    """Return the request body exactly as sent (payload format 2.0), which the signature covers."""
    if event_body is None:
        return b""
    if not is_base64_encoded:
        return event_body.encode("utf-8")
    try:
        return base64.b64decode(event_body, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidRequestError(
            f"body: isBase64Encoded is true but the body is not valid base64 ({error})"
        ) from error
