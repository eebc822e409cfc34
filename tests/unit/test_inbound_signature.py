"""Meta's X-Hub-Signature-256 over the raw body, and the body of a Function URL request."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from inbound.exceptions import InvalidRequestError
from inbound.signature import body_bytes, verify_meta_signature

APP_SECRET = b"test-app-secret"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def sign(body: bytes, secret: bytes = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_a_signature_made_with_the_app_secret_is_accepted() -> None:
    # GIVEN a body signed the way Meta signs it
    header = sign(BODY)
    # WHEN it is verified THEN it is accepted
    assert verify_meta_signature(BODY, header, APP_SECRET) is True


def test_a_signature_in_upper_case_hex_is_accepted() -> None:
    # GIVEN the same signature with its hex digits upper-cased
    header = "sha256=" + sign(BODY).removeprefix("sha256=").upper()
    # WHEN it is verified THEN hex case does not matter
    assert verify_meta_signature(BODY, header, APP_SECRET) is True


def test_a_body_altered_after_signing_is_refused() -> None:
    # GIVEN a valid signature for the original body
    header = sign(BODY)
    # WHEN the body that arrives differs by one byte THEN it is refused
    assert verify_meta_signature(BODY.replace(b"[]", b"[ ]"), header, APP_SECRET) is False


def test_a_signature_made_with_another_secret_is_refused() -> None:
    # GIVEN a body signed with someone else's secret
    header = sign(BODY, b"not-our-secret")
    # WHEN it is verified with ours THEN it is refused
    assert verify_meta_signature(BODY, header, APP_SECRET) is False


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + hmac.new(APP_SECRET, BODY, hashlib.sha1).hexdigest(),
        sign(BODY).removeprefix("sha256="),
        "sha256=not-hex-at-all",
        "sha256=" + "é" * 64,
    ],
    ids=["missing", "empty", "no-digest", "sha1", "no-prefix", "not-hex", "non-ascii"],
)
def test_a_missing_or_malformed_header_is_refused_without_raising(header: str | None) -> None:
    # GIVEN a header that is absent or not a sha256 signature
    # WHEN it is verified THEN the answer is a plain no
    assert verify_meta_signature(BODY, header, APP_SECRET) is False


def test_an_empty_app_secret_authenticates_nothing() -> None:
    # GIVEN a misconfigured empty secret and a body "signed" with it
    header = sign(BODY, b"")
    # WHEN it is verified THEN it is refused all the same
    assert verify_meta_signature(BODY, header, b"") is False


def test_a_base64_body_is_decoded_to_the_bytes_meta_signed() -> None:
    # GIVEN a Function URL event whose body the runtime base64-encoded
    raw = '{"text":"Não"}'.encode()
    event_body = base64.b64encode(raw).decode("ascii")
    # WHEN the body is read
    body = body_bytes(event_body, is_base64_encoded=True)
    # THEN it is the raw bytes, and Meta's signature over them verifies
    assert body == raw
    assert verify_meta_signature(body, sign(raw), APP_SECRET) is True


def test_a_plain_body_is_encoded_as_utf8() -> None:
    # GIVEN a body the runtime passed as text
    # WHEN it is read THEN it is its UTF-8 bytes
    assert body_bytes('{"text":"Não"}', is_base64_encoded=False) == '{"text":"Não"}'.encode()


def test_a_missing_body_is_empty() -> None:
    # GIVEN an event without a body WHEN it is read THEN it is empty bytes
    assert body_bytes(None, is_base64_encoded=True) == b""


@pytest.mark.parametrize(
    "event_body",
    ["{not base64!}", "aGVs*bG8=", "aGVsbG8"],
    ids=["json", "stray-character", "bad-padding"],
)
def test_a_body_flagged_base64_that_is_not_base64_is_refused_in_one_line(event_body: str) -> None:
    # GIVEN a body flagged as base64 that is not (a lenient decoder would drop the stray "*"
    # and hand the signature check bytes that were never sent)
    # WHEN it is read THEN a one-line error names the body
    with pytest.raises(InvalidRequestError, match=r"^body: .*not valid base64") as caught:
        body_bytes(event_body, is_base64_encoded=True)
    assert "\n" not in str(caught.value)
