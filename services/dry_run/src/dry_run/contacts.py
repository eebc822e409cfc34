"""Contact data: E.164 phones (phonenumbers), emails (email-validator, no DNS), and masking.

Validation is the costliest part of a decision (~17 µs a phone, ~25 µs an email), so each value
is validated at most once per container: results are cached by the raw string, a cheap shape
check turns obvious garbage away before the libraries run, and the policy only validates the
contact data of a channel the lead consented to.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# A plausible E.164 shape before the real parse: '+', then 8-15 digits, tolerating separators.
_E164_SHAPE = re.compile(r"^\+[1-9][\d\s().-]{6,20}$")
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CACHE_SIZE = 65_536


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_phone(raw: str) -> str | None:
    """The number in E.164 form when ``raw`` is a valid international number, else None."""
    candidate = raw.strip()
    if not _E164_SHAPE.match(candidate):
        return None
    try:
        number = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_email(raw: str) -> str | None:
    """The normalised address when ``raw`` is a syntactically valid email, else None."""
    candidate = raw.strip()
    if not _EMAIL_SHAPE.match(candidate):
        return None
    try:
        return validate_email(candidate, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def mask_phone(raw: str | None) -> str | None:
    """Keep the country code and the last 4 digits: ``+55*******4321``."""
    if raw is None:
        return None
    digits = re.sub(r"\D", "", raw)
    if len(digits) <= 6:
        return "*" * len(digits)
    return f"+{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def mask_email(raw: str | None) -> str | None:
    """Keep the first character of the local part and the domain: ``j***@example.com``."""
    if raw is None:
        return None
    local, at, domain = raw.strip().rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"
