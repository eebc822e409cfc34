"""Contact data: E.164 phones (phonenumbers), emails (email-validator, no DNS), and masking.

Validation is the costliest part of a decision (~17 µs a phone, 25-100 µs an email), so a value
is validated once, not at every run: each lead's verdicts are kept in
``lead_contact_verdicts`` next to the raw value they judged, and ``with_verdicts`` re-validates
only a value that changed since (and only one a decision can read: the policy's ``needs_*``).
Within a container, results are also cached by the raw string, and a cheap shape check turns
obvious garbage away before the libraries run.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from dry_run.policy import Lead, needs_email, needs_phone

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


class Verdicts(NamedTuple):
    """A lead's stored verdicts: each raw value judged, and its normal form (None: invalid)."""

    phone: str | None = None
    phone_e164: str | None = None
    email: str | None = None
    email_normalized: str | None = None


class CheckedLead(NamedTuple):
    """A lead with its verdicts applied, and the verdicts to store when they changed."""

    lead: Lead
    changed: Verdicts | None


def with_verdicts(lead: Lead, stored: Verdicts) -> CheckedLead:
    """Apply the stored verdicts, validating only a needed value that changed since."""
    current = stored
    if needs_phone(lead) and lead.phone != stored.phone:
        assert lead.phone is not None  # needs_phone says so
        current = current._replace(phone=lead.phone, phone_e164=normalize_phone(lead.phone))
    if needs_email(lead) and lead.email != stored.email:
        assert lead.email is not None  # needs_email says so
        current = current._replace(email=lead.email, email_normalized=normalize_email(lead.email))
    checked = lead._replace(
        phone_e164=current.phone_e164 if lead.phone == current.phone else None,
        email_normalized=current.email_normalized if lead.email == current.email else None,
    )
    return CheckedLead(checked, current if current is not stored else None)


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
