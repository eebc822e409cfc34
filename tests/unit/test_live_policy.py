"""Live mode's gates, the ledger's key states, retries and meeting proposals, as pure rules."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dry_run.contacts import Verdicts, with_verdicts
from dry_run.policy import (
    Channel,
    Decision,
    KeyState,
    Lead,
    LiveGates,
    Rejection,
    Tenant,
    decide_batch,
    dispatch_key,
    key_state,
    retry_at,
)
from dry_run.quiet_hours import is_national_holiday

# Wednesday 25 Nov 2026, 12:00 in São Paulo: inside every window.
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TODAY = date(2026, 11, 25)
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
TENANT = Tenant(id="t-1", timezone="America/Sao_Paulo", cooldown_hours=72)
PHONE = "+5511987654321"
EMAIL = "ana.souza@example.com"
EVERY_SENDER: Mapping[Channel, bool] = {"whatsapp": False, "email": False, "calendar": False}


def make_lead(**overrides: object) -> Lead:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "phone": PHONE,
        "email": EMAIL,
        "whatsapp_opt_in": True,
        "email_opt_in": True,
        "opted_out_at": None,
        "timezone": None,
        "stage": "new",
        "last_inbound_at": None,
    }
    values.update(overrides)
    # Judged as a run judges a lead seen for the first time: no stored verdicts.
    return with_verdicts(Lead(**values), Verdicts()).lead  # type: ignore[arg-type]


def gates(**overrides: object) -> LiveGates:
    values: dict[str, object] = {"senders": EVERY_SENDER}
    values.update(overrides)
    return LiveGates(**values)  # type: ignore[arg-type]


def decide_live(
    lead: Lead, live: LiveGates, tenant: Tenant = TENANT, now: datetime = NOON
) -> Decision:
    return decide_batch([lead], tenant, {}, now, taken_slots=[], gates=live)[0]


def key_of(lead: Lead, channel: Channel, template: str | None) -> str:
    return dispatch_key(TENANT.id, lead.id, channel, template, TODAY)


# --- each live gate --------------------------------------------------------------------------


def test_a_channel_without_a_sender_is_skipped() -> None:
    # GIVEN a tenant with an email sender only, and a WhatsApp lead
    live = gates(senders={"email": False})

    # WHEN the lead is decided live
    decision = decide_live(make_lead(), live)

    # THEN WhatsApp is skipped for want of a sender
    assert (decision.action, decision.reason, decision.channel) == (
        "skipped",
        "sender_not_configured",
        "whatsapp",
    )
    assert decision.dispatch_key is None


def test_a_paused_channel_is_skipped() -> None:
    live = gates(senders={"whatsapp": True, "email": False})

    decision = decide_live(make_lead(), live)

    assert (decision.action, decision.reason, decision.channel) == (
        "skipped",
        "channel_paused",
        "whatsapp",
    )


@pytest.mark.parametrize(
    ("overrides", "channel"),
    [
        ({"whatsapp_opt_in": False}, "email"),
        ({"stage": "meeting_requested"}, "calendar"),
    ],
    ids=["email", "calendar"],
)
def test_email_and_invitations_need_a_working_unsubscribe(
    overrides: dict[str, object], channel: str
) -> None:
    # GIVEN no one-click unsubscribe available to this run
    live = gates(unsubscribe_ready=False)

    # WHEN a lead whose channel is an email is decided
    decision = decide_live(make_lead(**overrides), live)

    # THEN it is skipped on that channel
    assert (decision.action, decision.reason, decision.channel) == (
        "skipped",
        "unsubscribe_not_configured",
        channel,
    )


def test_whatsapp_does_not_need_the_unsubscribe_link() -> None:
    live = gates(unsubscribe_ready=False)

    decision = decide_live(make_lead(), live)

    assert (decision.action, decision.channel) == ("would_send", "whatsapp")


@pytest.mark.parametrize(
    ("overrides", "channel"),
    [
        # Spaces, parentheses and a dash: the same number in E.164 is in the sandbox.
        ({"phone": "+55 (11) 98765-4321"}, "whatsapp"),
        # An upper-case domain: the same address normalised is in the sandbox.
        ({"whatsapp_opt_in": False, "email": "ana.souza@EXAMPLE.COM"}, "email"),
    ],
    ids=["phone", "email"],
)
def test_the_sandbox_compares_recipients_in_normal_form(
    overrides: dict[str, object], channel: str
) -> None:
    # GIVEN a sandbox holding the normal forms of a phone and an email
    live = gates(sandbox=frozenset({PHONE, EMAIL}))

    # WHEN a lead whose contact is written differently is decided
    decision = decide_live(make_lead(**overrides), live)

    # THEN it is let through
    assert (decision.action, decision.channel) == ("would_send", channel)


@pytest.mark.parametrize(
    ("overrides", "channel"),
    [
        ({"phone": "+5511912345678"}, "whatsapp"),
        ({"whatsapp_opt_in": False, "email": "someone.else@example.com"}, "email"),
        ({"stage": "meeting_requested", "email": "someone.else@example.com"}, "calendar"),
    ],
    ids=["whatsapp", "email", "calendar"],
)
def test_a_recipient_outside_a_non_empty_sandbox_is_blocked(
    overrides: dict[str, object], channel: str
) -> None:
    live = gates(sandbox=frozenset({PHONE, EMAIL}))

    decision = decide_live(make_lead(**overrides), live)

    assert (decision.action, decision.reason, decision.channel) == (
        "skipped",
        "sandbox_blocked",
        channel,
    )


def test_an_empty_sandbox_lets_anyone_through() -> None:
    live = gates(sandbox=frozenset())

    decision = decide_live(make_lead(phone="+5511912345678"), live)

    assert decision.action == "would_send"


def test_a_key_that_may_never_be_claimed_again_is_a_duplicate_intent() -> None:
    # GIVEN the lead's intent already in the ledger for good (sent, unknown, ...)
    lead = make_lead()
    live = gates(keys={key_of(lead, "whatsapp", "first_touch_v1"): KeyState(None)})

    # WHEN it is decided again
    decision = decide_live(lead, live)

    # THEN it is skipped, without a key to claim
    assert (decision.action, decision.reason, decision.channel) == (
        "skipped",
        "duplicate_intent",
        "whatsapp",
    )
    assert decision.dispatch_key is None


def test_a_retryable_failure_in_its_backoff_is_deferred_to_the_end_of_it() -> None:
    lead = make_lead()
    claimable_at = NOON + timedelta(minutes=5)
    live = gates(keys={key_of(lead, "whatsapp", "first_touch_v1"): KeyState(claimable_at)})

    decision = decide_live(lead, live)

    assert (decision.action, decision.reason, decision.not_before) == (
        "deferred",
        "retry_backoff",
        claimable_at,
    )
    assert decision.dispatch_key is None


@pytest.mark.parametrize("claimable_at", [NOON, NOON - timedelta(minutes=1)])
def test_a_retryable_failure_past_its_backoff_is_sent_again(claimable_at: datetime) -> None:
    lead = make_lead()
    key = key_of(lead, "whatsapp", "first_touch_v1")
    live = gates(keys={key: KeyState(claimable_at)})

    decision = decide_live(lead, live)

    assert (decision.action, decision.dispatch_key) == ("would_send", key)


def test_no_time_left_for_a_call_defers_the_send_to_now() -> None:
    # GIVEN an invocation whose remaining time covers no call
    live = gates(claims_left=0)

    decision = decide_live(make_lead(), live)

    # THEN the send is deferred, due again at once
    assert (decision.action, decision.reason, decision.not_before) == (
        "deferred",
        "time_budget",
        NOON,
    )


def test_each_send_uses_up_one_claim_of_the_time_budget() -> None:
    # GIVEN time for two calls and three leads to send to
    live = gates(claims_left=2)
    leads = [make_lead() for _ in range(3)]

    # WHEN the batch is decided
    decisions = decide_batch(leads, TENANT, {}, NOON, gates=live)

    # THEN the first two are sent and the third waits for the next invocation
    assert [(d.action, d.reason) for d in decisions] == [
        ("would_send", "whatsapp_template"),
        ("would_send", "whatsapp_template"),
        ("deferred", "time_budget"),
    ]
    assert live.claims_left == 0


def test_a_gated_lead_does_not_use_up_the_time_budget() -> None:
    # GIVEN time for one call, and a first lead whose channel has no sender
    live = gates(senders={"email": False}, claims_left=1)
    leads = [make_lead(), make_lead(whatsapp_opt_in=False)]

    decisions = decide_batch(leads, TENANT, {}, NOON, gates=live)

    assert [(d.action, d.reason) for d in decisions] == [
        ("skipped", "sender_not_configured"),
        ("would_send", "email_opt_in"),
    ]


# --- no silent fallback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"senders": {"email": False, "calendar": False}}, "sender_not_configured"),
        ({"senders": {"whatsapp": True, "email": False}}, "channel_paused"),
        ({"sandbox": frozenset({EMAIL})}, "sandbox_blocked"),
        ({"claims_left": 0}, "time_budget"),
    ],
    ids=["no-sender", "paused", "sandbox", "time-budget"],
)
def test_a_gated_channel_never_moves_the_lead_to_another(
    overrides: dict[str, object], reason: str
) -> None:
    # GIVEN a lead reachable on WhatsApp and by email, with email open to it
    lead = make_lead()

    # WHEN a live gate stops WhatsApp
    decision = decide_live(lead, gates(**overrides))

    # THEN the decision stays on WhatsApp with its template: email is not tried
    assert (decision.reason, decision.channel, decision.template) == (
        reason,
        "whatsapp",
        "first_touch_v1",
    )
    assert decision.action != "would_send"
    assert decision.details == (Rejection("calendar", "not_meeting_requested"),)


def test_a_gated_invitation_does_not_fall_back_to_whatsapp() -> None:
    lead = make_lead(stage="meeting_requested")

    decision = decide_live(lead, gates(senders={"whatsapp": False, "email": False}))

    assert (decision.action, decision.reason, decision.channel, decision.template) == (
        "skipped",
        "sender_not_configured",
        "calendar",
        "meeting_invite_v1",
    )
    assert decision.meeting_at is None


# --- opt-outs per channel, in both modes -----------------------------------------------------


NOT_MEETING = Rejection("calendar", "not_meeting_requested")


@pytest.mark.parametrize("live", [False, True], ids=["dry-run", "live"])
@pytest.mark.parametrize(
    ("stage", "opted_out", "channel", "rejected"),
    [
        ("new", "whatsapp", "email", [NOT_MEETING, Rejection("whatsapp", "opted_out_channel")]),
        ("new", "email", "whatsapp", [NOT_MEETING]),
        ("meeting_requested", "email", "whatsapp", [Rejection("calendar", "opted_out_channel")]),
        (
            "meeting_requested",
            "calendar",
            "whatsapp",
            [Rejection("calendar", "opted_out_channel")],
        ),
        ("meeting_requested", "whatsapp", "calendar", []),
    ],
    ids=[
        "whatsapp-out",
        "email-out",
        "email-out-blocks-calendar",
        "calendar-out",
        "whatsapp-out-keeps-calendar",
    ],
)
def test_an_opt_out_closes_only_the_channels_it_covers(
    live: bool, stage: str, opted_out: str, channel: str, rejected: list[Rejection]
) -> None:
    # GIVEN a lead with an opt_outs row for one channel
    lead = make_lead(stage=stage, opted_out_channels=frozenset({opted_out}))

    # WHEN it is decided, in a dry run or live
    decision = decide_batch(
        [lead], TENANT, {}, NOON, taken_slots=[], gates=gates() if live else None
    )[0]

    # THEN the covered channels are rejected as opted out, and the next channel is chosen
    assert (decision.action, decision.channel) == ("would_send", channel)
    assert list(decision.details) == rejected


@pytest.mark.parametrize("live", [False, True], ids=["dry-run", "live"])
def test_an_all_channel_opt_out_row_closes_every_channel(live: bool) -> None:
    lead = make_lead(stage="meeting_requested", opted_out_channels=frozenset({"*"}))

    decision = decide_batch(
        [lead], TENANT, {}, NOON, taken_slots=[], gates=gates() if live else None
    )[0]

    assert (decision.action, decision.reason, decision.channel) == (
        "skipped",
        "no_eligible_channel",
        None,
    )
    assert list(decision.details) == [
        Rejection("calendar", "opted_out_channel"),
        Rejection("whatsapp", "opted_out_channel"),
        Rejection("email", "opted_out_channel"),
    ]


# --- the ledger's key states and retries -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable", "attempt", "at"),
    [
        ("sent", None, 1, None),
        ("unknown", None, 1, None),
        ("claimed", None, 1, None),
        ("failed", False, 1, None),
        ("failed", True, 3, None),
        # A retry time on a row whose attempts are used up still allows nothing.
        ("failed", True, 3, NOON),
        ("sent", True, 1, NOON),
    ],
    ids=[
        "sent",
        "unknown",
        "claimed",
        "failed-permanent",
        "attempts-used",
        "attempts-used-with-time",
        "sent-with-stale-fields",
    ],
)
def test_a_key_that_may_not_be_claimed_again_is_never_claimable(
    status: str, retryable: bool | None, attempt: int, at: datetime | None
) -> None:
    assert key_state(status, retryable, attempt, at) == KeyState(None)


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_retryable_failure_with_attempts_left_is_claimable_at_its_retry(attempt: int) -> None:
    at = NOON + timedelta(minutes=30)

    assert key_state("failed", True, attempt, at) == KeyState(at)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, NOON + timedelta(minutes=5)),
        (2, NOON + timedelta(minutes=30)),
        (3, None),
    ],
)
def test_retries_back_off_5_then_30_minutes_and_stop_after_the_third_attempt(
    attempt: int, expected: datetime | None
) -> None:
    assert retry_at(attempt, NOON) == expected


# --- meeting proposals -----------------------------------------------------------------------


def meeting_leads(count: int) -> list[Lead]:
    return [make_lead(stage="meeting_requested") for _ in range(count)]


def minutes_after_nine(moment: datetime) -> int:
    local = moment.astimezone(SAO_PAULO)
    nine = datetime.combine(local.date(), time(9), tzinfo=SAO_PAULO)
    return int((local - nine).total_seconds() // 60)


@pytest.mark.parametrize("live", [False, True], ids=["dry-run", "live"])
def test_a_batch_of_meeting_requests_gets_distinct_aligned_slots_a_day_ahead(live: bool) -> None:
    # GIVEN a tenant with 45-minute meetings and six leads asking for one
    tenant = Tenant(id="t-1", timezone="America/Sao_Paulo", cooldown_hours=72, meeting_minutes=45)

    # WHEN the batch is decided
    decisions = decide_batch(
        meeting_leads(6), tenant, {}, NOON, taken_slots=[], gates=gates() if live else None
    )

    # THEN each invitation proposes its own slot, 24 h ahead or more, on the 09:00 + k x 45 grid
    slots = [d.meeting_at for d in decisions]
    assert all(d.action == "would_send" and d.channel == "calendar" for d in decisions)
    starts = [s for s in slots if s is not None]
    assert len(starts) == 6
    assert len(set(starts)) == 6
    assert all(s >= NOON + timedelta(hours=24) for s in starts)
    assert all(minutes_after_nine(s) % 45 == 0 for s in starts)
    assert all(
        s.astimezone(SAO_PAULO).time() >= time(9)
        and (s + timedelta(minutes=45)).astimezone(SAO_PAULO).time() <= time(18)
        for s in starts
    )
    # Thursday 12:00 (24 h after noon on Wednesday) is on the grid: the first proposal.
    assert starts[0] == datetime(2026, 11, 26, 12, 0, tzinfo=SAO_PAULO)


def test_taken_slots_are_never_proposed() -> None:
    # GIVEN the first two slots a day ahead already taken (one given in UTC)
    taken = [
        datetime(2026, 11, 26, 12, 0, tzinfo=SAO_PAULO),
        datetime(2026, 11, 26, 15, 30, tzinfo=UTC),
    ]

    # WHEN two meeting requests are decided live
    decisions = decide_batch(meeting_leads(2), TENANT, {}, NOON, taken_slots=taken, gates=gates())

    # THEN they get the next two free slots
    assert [d.meeting_at for d in decisions] == [
        datetime(2026, 11, 26, 13, 0, tzinfo=SAO_PAULO),
        datetime(2026, 11, 26, 13, 30, tzinfo=SAO_PAULO),
    ]


def business_days(first: date, count: int) -> list[date]:
    days = [first + timedelta(days=offset) for offset in range(count)]
    return [day for day in days if day.weekday() < 5 and not is_national_holiday(day)]


FULL_DAY = Tenant(id="t-1", timezone="America/Sao_Paulo", cooldown_hours=72, meeting_minutes=540)


def test_no_free_slot_only_when_the_whole_horizon_is_taken() -> None:
    # GIVEN 540-minute meetings (one a day) and every business day for over a year taken
    days = business_days(date(2026, 11, 26), 400)
    taken = [datetime.combine(day, time(9), tzinfo=SAO_PAULO) for day in days]

    # WHEN a meeting request is decided live
    decision = decide_batch(meeting_leads(1), FULL_DAY, {}, NOON, taken_slots=taken, gates=gates())[
        0
    ]

    # THEN it is skipped on the calendar, without falling back to WhatsApp
    assert (decision.action, decision.reason, decision.channel, decision.meeting_at) == (
        "skipped",
        "no_free_slot",
        "calendar",
        None,
    )


def test_one_free_day_in_the_horizon_is_found() -> None:
    # GIVEN the same full year, except one business day three months ahead
    days = business_days(date(2026, 11, 26), 400)
    free = next(day for day in days if day >= date(2027, 3, 1))
    taken = [datetime.combine(day, time(9), tzinfo=SAO_PAULO) for day in days if day != free]

    decision = decide_batch(meeting_leads(1), FULL_DAY, {}, NOON, taken_slots=taken, gates=gates())[
        0
    ]

    assert (decision.action, decision.meeting_at) == (
        "would_send",
        datetime.combine(free, time(9), tzinfo=SAO_PAULO),
    )


def test_a_gated_invitation_books_no_slot_for_the_leads_after_it() -> None:
    # GIVEN time for one call only, and two meeting requests
    live = gates(claims_left=1)

    decisions = decide_batch(meeting_leads(2), TENANT, {}, NOON, taken_slots=[], gates=live)

    # THEN the second is deferred without holding a slot
    assert [(d.action, d.meeting_at) for d in decisions] == [
        ("would_send", datetime(2026, 11, 26, 12, 0, tzinfo=SAO_PAULO)),
        ("deferred", None),
    ]
