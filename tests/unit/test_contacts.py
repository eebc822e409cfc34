"""Contact validation and masking."""

from __future__ import annotations

import pytest

from dry_run.contacts import mask_email, mask_phone, normalize_email, normalize_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+5511987654321", "+5511987654321"),
        ("+55 11 98765-4321", "+5511987654321"),
        (" +5521987654321 ", "+5521987654321"),
        ("(11) 98765-4321", None),  # national format is not E.164
        ("+55 11", None),
        ("+5511000000000", None),  # shaped like a number, not a valid one
        ("telefone", None),
        ("", None),
    ],
)
def test_phones_must_be_valid_e164(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("joao.silva@example.com", True),
        ("Maria@Example.COM.br", True),
        ("joao@", False),
        ("maria.silva", False),
        ("a@b", False),
        ("two@@example.com", False),
        ("contato at empresa.com.br", False),
    ],
)
def test_emails_are_validated_without_dns(raw: str, valid: bool) -> None:
    assert (normalize_email(raw) is not None) is valid


def test_masks_keep_no_full_phone_or_email() -> None:
    assert mask_phone("+5511987654321") == "+55*******4321"
    assert mask_email("joao.silva@example.com") == "j***@example.com"
    assert mask_phone("123") == "***"
    assert mask_email("garbage") == "***"
    assert mask_phone(None) is None
