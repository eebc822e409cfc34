"""Live mode's pure parts: content rendering, pacing, the time budget, and answers to outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dry_run.live import (
    RECORD_RESERVE_S,
    Claimed,
    LiveRuntime,
    Pacer,
    RenderError,
    build_dispatch,
    first_name,
    outcome_of,
    render,
)
from dry_run.live_ledger import Outcome, SenderRow, TemplateRow
from dry_run.meetings import Meeting
from dry_run.policy import Channel, Decision, Lead, Tenant
from dry_run.senders import Content, Dispatch, SendResult

NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TENANT = Tenant(id="t-1", timezone="America/Sao_Paulo", cooldown_hours=72)
KEY = "ab" * 32
SECRET = "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/test/tenants/t-1"


def make_lead(full_name: str | None = "Ana Souza") -> Lead:
    return Lead(
        id="7b0d2c8e-1f1e-4c55-9b9e-0c8f1e2d3a4b",
        phone="+5511987654321",
        email="ana.souza@example.com",
        whatsapp_opt_in=True,
        email_opt_in=True,
        opted_out_at=None,
        timezone=None,
        stage="new",
        last_inbound_at=None,
        phone_e164="+5511987654321",
        email_normalized="ana.souza@example.com",
        full_name=full_name,
    )


def template(
    body: str, *, subject: str | None = None, parameters: tuple[str, ...] = ()
) -> TemplateRow:
    return TemplateRow("whatsapp", "pt_BR", subject, body, parameters)


def send_decision(channel: Channel = "whatsapp", **changes: Any) -> Decision:
    values: dict[str, Any] = {
        "lead_id": make_lead().id,
        "action": "would_send",
        "reason": "whatsapp_template",
        "channel": channel,
        "template": "first_touch_v1",
        "dispatch_key": KEY,
    }
    values.update(changes)
    return Decision(**values)


# --- first_name and render -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("full_name", "expected"),
    [
        ("Ana Souza", "Ana"),
        ("  Ana   Maria Souza ", "Ana"),
        ("Ana", "Ana"),
        (None, "cliente"),
        ("", "cliente"),
        ("   ", "cliente"),
    ],
)
def test_the_greeting_uses_the_first_word_of_the_name_or_a_neutral_word(
    full_name: str | None, expected: str
) -> None:
    assert first_name(full_name) == expected


def test_every_field_of_the_content_is_rendered_with_the_leads_first_name() -> None:
    # GIVEN content with the first name in its subject, body and WhatsApp parameters
    row = TemplateRow(
        "email",
        "pt_BR",
        "Podemos ajudar, {first_name}?",
        "Olá {first_name}, tudo bem? {{não é um campo}}",
        ("{first_name}", "fixo"),
    )

    # WHEN it is rendered for Ana Souza
    content = render(row, make_lead(), None)

    # THEN each placeholder is filled, escaped braces stay, the language is kept
    assert content == Content(
        subject="Podemos ajudar, Ana?",
        body="Olá Ana, tudo bem? {não é um campo}",
        language="pt_BR",
        parameters=("Ana", "fixo"),
    )


def test_an_invitation_shows_the_meeting_on_the_tenants_clock() -> None:
    # GIVEN a meeting at 15:00 UTC, which is 12:00 in São Paulo
    meeting = Meeting(
        starts_at=datetime(2026, 11, 26, 15, 0, tzinfo=UTC),
        ends_at=datetime(2026, 11, 26, 15, 30, tzinfo=UTC),
        timezone="America/Sao_Paulo",
    )

    content = render(template("Reservamos {meeting_at}."), make_lead(), meeting)

    assert content.body == "Reservamos 26/11/2026 12:00."


@pytest.mark.parametrize(
    "body",
    [
        "Olá {last_name}",
        # {meeting_at} without a meeting (not an invitation)
        "Reservamos {meeting_at}",
        "Olá {0}",
        "Olá {}",
        "Olá {first_name",
    ],
    ids=["unknown", "meeting-without-meeting", "positional", "empty", "unclosed"],
)
def test_content_that_cannot_be_rendered_raises_a_render_error(body: str) -> None:
    with pytest.raises(RenderError):
        render(template(body), make_lead(), None)


def test_an_unknown_placeholder_in_a_parameter_raises_a_render_error() -> None:
    with pytest.raises(RenderError, match="last_name"):
        render(template("Olá", parameters=("{last_name}",)), make_lead(), None)


@pytest.mark.parametrize(
    "body",
    [
        "Olá {first_name.__class__}",
        "Olá {first_name[0]}",
        "Olá {first_name!r}",
        "Olá {first_name:>40}",
    ],
    ids=["attribute", "index", "conversion", "format-spec"],
)
def test_a_placeholder_is_a_bare_name_nothing_more(body: str) -> None:
    # GIVEN content whose placeholder reaches into the value (an attribute, an index, a
    # conversion or a format spec): not one of the documented placeholders
    # WHEN it is rendered
    # THEN it is refused, rather than sending "Olá <class 'str'>" (or a padded name) to a lead
    with pytest.raises(RenderError):
        render(template(body), make_lead(), None)


# --- build_dispatch's failures before any call -----------------------------------------------

SENDERS: dict[Channel, SenderRow] = {
    "whatsapp": SenderRow("106540352242922", SECRET, None, False),
    "email": SenderRow("vendas@acme.com.br", None, "tenant-set", False),
    "calendar": SenderRow("vendas@acme.com.br", None, None, False),
}
TEMPLATES = {
    "first_touch_v1": TemplateRow("whatsapp", "pt_BR", None, "Olá {first_name}", ("{first_name}",)),
    "email_first_touch_v1": TemplateRow("email", None, "Oi {first_name}", "Olá {first_name}", ()),
    "meeting_invite_v1": TemplateRow("calendar", None, "Reunião", "Em {meeting_at}", ()),
}


def prepare(
    decision: Decision,
    templates: dict[str, TemplateRow] | None = None,
    runtime: LiveRuntime | None = None,
) -> Dispatch | Outcome:
    return build_dispatch(
        Claimed(decision, make_lead(), 1),
        TENANT,
        SENDERS,
        TEMPLATES if templates is None else templates,
        runtime or LiveRuntime(senders={}),
    )


def test_a_claim_without_content_fails_as_template_missing() -> None:
    outcome = prepare(send_decision(), templates={})

    assert isinstance(outcome, Outcome)
    assert (outcome.status, outcome.error_code, outcome.retryable) == (
        "failed",
        "template_missing",
        False,
    )


def test_content_written_for_another_channel_is_missing_for_this_one() -> None:
    templates = {"first_touch_v1": TEMPLATES["email_first_touch_v1"]}

    outcome = prepare(send_decision(), templates=templates)

    assert isinstance(outcome, Outcome)
    assert outcome.error_code == "template_missing"


def test_content_that_cannot_be_rendered_fails_as_template_invalid() -> None:
    templates = {"first_touch_v1": TemplateRow("whatsapp", "pt_BR", None, "{nope}", ())}

    outcome = prepare(send_decision(), templates=templates)

    assert isinstance(outcome, Outcome)
    assert (outcome.status, outcome.error_code) == ("failed", "template_invalid")


def test_a_whatsapp_secret_outside_the_allowed_prefix_is_never_used() -> None:
    runtime = LiveRuntime(senders={}, secrets_prefix="arn:aws:secretsmanager:sa-east-1:1:secret:x/")

    outcome = prepare(send_decision(), runtime=runtime)

    assert isinstance(outcome, Outcome)
    assert outcome.error_code == "secret_outside_prefix"


def test_an_invitation_carries_its_slot_for_the_tenants_meeting_length() -> None:
    starts_at = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    decision = send_decision(
        "calendar", template="meeting_invite_v1", reason="meeting_requested", meeting_at=starts_at
    )

    dispatch = prepare(decision)

    assert isinstance(dispatch, Dispatch)
    assert dispatch.meeting == Meeting(
        starts_at=starts_at, ends_at=starts_at + timedelta(minutes=30), timezone=TENANT.timezone
    )
    assert dispatch.content.body == "Em 26/11/2026 12:00"
    assert (dispatch.recipient, dispatch.sender, dispatch.secret_arn) == (
        "ana.souza@example.com",
        "vendas@acme.com.br",
        None,
    )


def test_an_emails_configuration_set_is_the_tenants_own_else_the_stacks() -> None:
    runtime = LiveRuntime(senders={}, configuration_set="stack-set")
    email = send_decision("email", template="email_first_touch_v1", reason="email_opt_in")
    invite = send_decision(
        "calendar", template="meeting_invite_v1", reason="meeting_requested", meeting_at=NOON
    )

    own = prepare(email, runtime=runtime)
    default = prepare(invite, runtime=runtime)

    assert isinstance(own, Dispatch)
    assert isinstance(default, Dispatch)
    assert (own.configuration_set, default.configuration_set) == ("tenant-set", "stack-set")


# --- Pacer -----------------------------------------------------------------------------------


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def start_times(pacer: Pacer, fake: FakeTime, key: str, calls: int) -> list[float]:
    starts = []
    for _ in range(calls):
        pacer.wait(key)
        starts.append(fake.now)
    return starts


def test_no_second_holds_more_than_80_calls_for_one_number() -> None:
    # GIVEN a pacer at WhatsApp's 80 messages per second, and 161 calls asked at once
    fake = FakeTime()
    pacer = Pacer(80, clock=fake.clock, sleep=fake.sleep)

    # WHEN each waits for its turn
    starts = start_times(pacer, fake, "106540352242922", 161)

    # THEN any 81 consecutive calls span a full second: the 81st waits for the next second
    assert all(starts[i + 80] - starts[i] >= 1.0 - 1e-9 for i in range(len(starts) - 80))
    assert starts[80] - starts[0] == pytest.approx(1.0)
    assert starts[-1] - starts[0] == pytest.approx(2.0)


def test_the_first_call_for_a_number_does_not_wait() -> None:
    fake = FakeTime()
    pacer = Pacer(80, clock=fake.clock, sleep=fake.sleep)

    pacer.wait("106540352242922")

    assert fake.sleeps == []


def test_each_number_is_paced_on_its_own() -> None:
    # GIVEN one number that has just used up its second
    fake = FakeTime()
    pacer = Pacer(80, clock=fake.clock, sleep=fake.sleep)
    start_times(pacer, fake, "111", 80)
    waited = len(fake.sleeps)

    # WHEN another number sends, and then the first again
    pacer.wait("222")
    other_waited = len(fake.sleeps) - waited
    pacer.wait("111")

    # THEN the other number did not wait; the first still does
    assert other_waited == 0
    assert len(fake.sleeps) == waited + 1


def test_a_number_idle_for_a_while_sends_at_once() -> None:
    fake = FakeTime()
    pacer = Pacer(80, clock=fake.clock, sleep=fake.sleep)
    start_times(pacer, fake, "111", 10)
    fake.now += 5.0
    slept = len(fake.sleeps)

    pacer.wait("111")

    assert len(fake.sleeps) == slept


@pytest.mark.parametrize("rate", [0, -1.0])
def test_a_pacer_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s must be positive"):
        Pacer(rate)


# --- LiveRuntime.capacity --------------------------------------------------------------------


def test_an_unknown_remaining_time_does_not_limit_the_claims() -> None:
    runtime = LiveRuntime(senders={})

    assert runtime.capacity(None) >= 1_000_000


@pytest.mark.parametrize("remaining_s", [0.0, 5.0, 13.0, 13.0 + RECORD_RESERVE_S - 0.001])
def test_less_time_than_one_call_and_its_recording_allows_no_claim(remaining_s: float) -> None:
    runtime = LiveRuntime(senders={}, call_timeout_s=13.0)

    assert runtime.capacity(remaining_s) == 0


def test_time_for_one_full_call_and_its_recording_allows_claims() -> None:
    runtime = LiveRuntime(senders={}, call_timeout_s=13.0, concurrency=4)

    assert runtime.capacity(13.0 + RECORD_RESERVE_S) > 0


def test_more_time_and_more_threads_allow_more_claims() -> None:
    runtime = LiveRuntime(senders={}, call_timeout_s=13.0, concurrency=4)
    wider = LiveRuntime(senders={}, call_timeout_s=13.0, concurrency=8)

    assert runtime.capacity(300.0) > runtime.capacity(60.0) > 0
    assert wider.capacity(60.0) == 2 * runtime.capacity(60.0)


# --- outcome_of ------------------------------------------------------------------------------


def claimed(attempt: int = 1) -> Claimed:
    return Claimed(send_decision(), make_lead(), attempt)


def test_an_accepted_send_is_sent_with_the_providers_id() -> None:
    outcome = outcome_of(claimed(), SendResult("sent", provider_message_id="wamid.1"), NOON)

    assert (outcome.status, outcome.provider_message_id, outcome.error_code) == (
        "sent",
        "wamid.1",
        None,
    )


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, NOON + timedelta(minutes=5)),
        (2, NOON + timedelta(minutes=30)),
        (3, None),
    ],
)
def test_a_retryable_failure_is_retried_after_its_attempts_backoff(
    attempt: int, expected: datetime | None
) -> None:
    result = SendResult("failed", error_code="130429", retryable=True)

    outcome = outcome_of(claimed(attempt), result, NOON)

    assert (outcome.status, outcome.error_code, outcome.retryable, outcome.retry_at) == (
        "failed",
        "130429",
        True,
        expected,
    )


def test_a_permanent_failure_is_never_retried_and_keeps_what_it_asks_for() -> None:
    result = SendResult("failed", error_code="131048", retryable=False, pause_channel=True)

    outcome = outcome_of(claimed(), result, NOON)

    assert (outcome.status, outcome.retryable, outcome.retry_at, outcome.pause_channel) == (
        "failed",
        False,
        None,
        True,
    )


def test_an_unreachable_lead_is_carried_to_the_record() -> None:
    result = SendResult("failed", error_code="131026", retryable=False, unreachable=True)

    outcome = outcome_of(claimed(), result, NOON)

    assert outcome.unreachable


def test_a_failure_without_a_code_still_records_one() -> None:
    # dispatches has a CHECK: a failed row needs an error code.
    outcome = outcome_of(claimed(), SendResult("failed"), NOON)

    assert (outcome.status, outcome.error_code, outcome.retryable) == ("failed", "failed", False)


def test_an_ambiguous_answer_is_unknown() -> None:
    result = SendResult("unknown", error_code="read_timeout")

    outcome = outcome_of(claimed(), result, NOON)

    assert (outcome.status, outcome.error_code, outcome.retry_at) == (
        "unknown",
        "read_timeout",
        None,
    )
