"""Event validation: bad input becomes one line naming the field and what was expected."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dry_run.events import InvalidEventError, parse_event
from dry_run.settings import dispatch_enabled, sandbox_recipients
from tests.support import FIXTURES

EVENTS = FIXTURES / "events"


def load(name: str) -> object:
    return json.loads((EVENTS / name).read_text())


def test_a_valid_event_parses_into_the_typed_model() -> None:
    event = parse_event(load("valid_with_run_id.json"))

    assert (event.tenant_id, event.batch_size, event.run_id) == (
        "test-001",
        50,
        "manual-2026-11-25",
    )


def test_run_id_is_optional() -> None:
    assert parse_event(load("valid.json")).run_id is None


@pytest.mark.parametrize(
    ("fixture", "field", "message"),
    [
        ("missing_tenant.json", "tenantId", "tenantId: missing; expected a tenant id"),
        ("empty_tenant.json", "tenantId", "tenantId: expected a tenant id (1-64 letters"),
        ("batch_zero.json", "batchSize", "batchSize: expected an integer from 1 to 1000, got 0"),
        ("batch_negative.json", "batchSize", "batchSize: expected an integer from 1 to 1000"),
        ("batch_too_big.json", "batchSize", "got 1001"),
        ("batch_float.json", "batchSize", "batchSize: expected an integer from 1 to 1000, got 5.0"),
        ("batch_string.json", "batchSize", "got '50'"),
        ("batch_bool.json", "batchSize", "got True"),
        ("missing_batch.json", "batchSize", "batchSize: missing; expected an integer"),
        ("extra_field.json", "dryRun", "dryRun: unexpected field; expected only tenantId"),
        ("not_an_object.json", "event", "event: expected a JSON object with tenantId and"),
    ],
)
def test_bad_input_names_the_field_and_what_was_expected(
    fixture: str, field: str, message: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(load(fixture))

    assert caught.value.field == field
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("raw", [None, "tenantId=test-001", 42])
def test_non_object_events_are_rejected(raw: object) -> None:
    with pytest.raises(InvalidEventError, match="event: expected a JSON object"):
        parse_event(raw)


@pytest.mark.parametrize(
    ("value", "live"),
    [
        (None, False),
        ("true", True),
        ("TRUE", False),
        ("True", False),
        (" true", False),
        ("true ", False),
        ("1", False),
        ("yes", False),
        ("false", False),
        ("", False),
    ],
)
def test_only_the_exact_string_true_enables_live_dispatch(value: str | None, live: bool) -> None:
    environ = {} if value is None else {"MICRO_AGENT_DISPARO_ENABLED": value}
    assert dispatch_enabled(environ) is live


@given(value=st.text(max_size=8))
def test_any_flag_value_other_than_exact_true_is_a_dry_run(value: str) -> None:
    assert dispatch_enabled({"MICRO_AGENT_DISPARO_ENABLED": value}) is (value == "true")


def test_sandbox_recipients_parse_as_a_trimmed_set() -> None:
    environ = {"MICRO_AGENT_SANDBOX_RECIPIENTS": " +5511999990000, qa@example.com ,,"}

    assert sandbox_recipients(environ) == frozenset({"+5511999990000", "qa@example.com"})
    assert sandbox_recipients({}) == frozenset()
