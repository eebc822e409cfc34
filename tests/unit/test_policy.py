"""The decision rules, one behaviour per test, plus properties over generated leads."""

from __future__ import annotations

import dataclasses
import uuid
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dry_run.contacts import Verdicts, with_verdicts
from dry_run.policy import (
    ChannelLimit,
    ChannelUsage,
    Decision,
    Lead,
    Rejection,
    Tenant,
    decide_batch,
    dispatch_key,
    is_suppressed,
    next_due,
)
from dry_run.quiet_hours import allowed_window

# Wednesday 25 Nov 2026, 12:00 in São Paulo: inside every window.
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TENANT = Tenant(id="t-1", timezone="America/Sao_Paulo", cooldown_hours=72)
VALID_PHONE = "+5511987654321"
VALID_EMAIL = "ana.souza@example.com"


def make_lead(**overrides: object) -> Lead:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "phone": VALID_PHONE,
        "email": VALID_EMAIL,
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


def decide_one(lead: Lead, tenant: Tenant = TENANT, now: datetime = NOON, usage=None):  # type: ignore[no-untyped-def]
    return decide_batch([lead], tenant, usage or {}, now)[0]


def test_opt_out_overrides_everything() -> None:
    lead = make_lead(opted_out_at=NOON - timedelta(days=1), stage="meeting_requested")

    decision = decide_one(lead)

    assert (decision.action, decision.reason, decision.channel) == ("skipped", "opted_out", None)


@pytest.mark.parametrize("stage", ["customer", "lost"])
def test_customers_and_lost_leads_are_excluded(stage: str) -> None:
    decision = decide_one(make_lead(stage=stage))

    assert (decision.action, decision.reason) == ("skipped", "stage_excluded")


def test_a_lead_contacted_within_the_cooldown_is_skipped() -> None:
    lead = make_lead(last_contacted_at=NOON - timedelta(hours=71))

    assert decide_one(lead).reason == "cooldown"
    assert decide_one(make_lead(last_contacted_at=NOON - timedelta(hours=73))).action == (
        "would_send"
    )


def test_meeting_requests_get_a_calendar_invite() -> None:
    decision = decide_one(make_lead(stage="meeting_requested", email_opt_in=False))

    assert (decision.action, decision.channel, decision.reason, decision.template) == (
        "would_send",
        "calendar",
        "meeting_requested",
        "meeting_invite_v1",
    )


def test_whatsapp_template_outside_the_24h_window() -> None:
    decision = decide_one(make_lead(last_inbound_at=NOON - timedelta(hours=25)))

    assert (decision.channel, decision.reason, decision.template) == (
        "whatsapp",
        "whatsapp_template",
        "first_touch_v1",
    )
    assert decision.details == (Rejection("calendar", "not_meeting_requested"),)


def test_whatsapp_session_message_inside_the_24h_window() -> None:
    decision = decide_one(make_lead(last_inbound_at=NOON - timedelta(hours=23)))

    assert (decision.channel, decision.reason, decision.template) == (
        "whatsapp",
        "whatsapp_session",
        None,
    )


def test_each_rejected_channel_carries_its_own_reason() -> None:
    lead = make_lead(phone="(11) 98765-4321", email_opt_in=True, email="not-an-email")

    decision = decide_one(lead)

    assert (decision.action, decision.reason) == ("skipped", "no_eligible_channel")
    assert decision.details == (
        Rejection("calendar", "not_meeting_requested"),
        Rejection("whatsapp", "invalid_phone"),
        Rejection("email", "invalid_email"),
    )


@pytest.mark.parametrize(
    ("overrides", "whatsapp_reason", "email_reason"),
    [
        ({"whatsapp_opt_in": False, "email_opt_in": False}, "no_consent", "no_consent"),
        ({"phone": None, "email": None}, "missing_phone", "missing_email"),
        ({"phone": "", "email": ""}, "missing_phone", "missing_email"),
    ],
)
def test_consent_and_missing_data_reasons(
    overrides: dict[str, object], whatsapp_reason: str, email_reason: str
) -> None:
    decision = decide_one(make_lead(**overrides))

    assert decision.details[1:] == (
        Rejection("whatsapp", whatsapp_reason),
        Rejection("email", email_reason),
    )


def test_email_when_whatsapp_is_not_consented() -> None:
    decision = decide_one(make_lead(whatsapp_opt_in=False))

    assert (decision.channel, decision.reason, decision.template) == (
        "email",
        "email_opt_in",
        "email_first_touch_v1",
    )


def test_whatsapp_in_quiet_hours_is_deferred_without_falling_back_to_email() -> None:
    late = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo

    decision = decide_one(make_lead(), now=late)

    assert (decision.action, decision.reason, decision.channel) == (
        "deferred",
        "quiet_hours",
        "whatsapp",
    )
    assert decision.not_before == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert decision.dispatch_key is None


def test_quiet_hours_use_the_leads_own_timezone() -> None:
    # 09:30 in São Paulo is 07:30 in Rio Branco (UTC-5): still quiet there.
    instant = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)

    assert decide_one(make_lead(timezone="America/Sao_Paulo"), now=instant).action == "would_send"
    assert decide_one(make_lead(timezone="America/Rio_Branco"), now=instant).action == "deferred"


def test_an_invalid_lead_timezone_falls_back_to_the_tenants() -> None:
    decision = decide_one(make_lead(timezone="Mars/Olympus_Mons"))

    assert decision.action == "would_send"


def test_caps_count_the_ledger_and_earlier_decisions_of_the_batch() -> None:
    tenant = dataclasses.replace(TENANT, limits={"whatsapp": ChannelLimit(per_hour=3, per_day=10)})
    oldest = NOON - timedelta(minutes=50)
    usage = {
        "whatsapp": ChannelUsage(hour_count=1, hour_oldest=oldest, day_count=1, day_oldest=oldest)
    }

    decisions = decide_batch([make_lead() for _ in range(4)], tenant, usage, NOON)

    assert [d.action for d in decisions] == ["would_send", "would_send", "deferred", "deferred"]
    assert decisions[2].reason == "rate_limited"
    assert decisions[2].not_before == oldest + timedelta(hours=1)


def test_default_caps_apply_without_a_channel_limits_row() -> None:
    usage = {
        "email": ChannelUsage(
            hour_count=200,
            hour_oldest=NOON - timedelta(minutes=5),
            day_count=200,
            day_oldest=NOON - timedelta(minutes=5),
        )
    }

    decision = decide_one(make_lead(whatsapp_opt_in=False), usage=usage)

    assert (decision.action, decision.reason) == ("deferred", "rate_limited")


def test_the_same_intent_already_recorded_today_is_not_recorded_again() -> None:
    lead = make_lead()
    key = dispatch_key(TENANT.id, lead.id, "whatsapp", "first_touch_v1", date(2026, 11, 25))

    decision = decide_one(lead._replace(recent_dispatch_keys=frozenset({key})))

    assert (decision.action, decision.reason) == ("skipped", "duplicate_intent")


def test_the_dispatch_key_is_stable_for_the_same_intent_and_differs_across_days() -> None:
    lead = make_lead()
    first = decide_one(lead)
    again = decide_one(lead)
    next_day = decide_one(lead, now=NOON + timedelta(days=1))

    assert first.dispatch_key == again.dispatch_key
    assert first.dispatch_key != next_day.dispatch_key


# --- when a decided lead is due again ---------------------------------------------------------


def test_a_send_waits_out_the_cooldown_and_records_its_time() -> None:
    lead = make_lead()
    decision = decide_one(lead)

    due = next_due(decision, lead, TENANT, NOON)

    assert decision.action == "would_send"
    assert due == (NOON + timedelta(hours=72), NOON)


def test_a_deferral_is_due_at_its_not_before_whatever_the_cooldown() -> None:
    tenant = dataclasses.replace(TENANT, cooldown_hours=0)
    late = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo
    lead = make_lead()
    decision = decide_one(lead, tenant=tenant, now=late)

    due = next_due(decision, lead, tenant, late)

    assert decision.reason == "quiet_hours"
    assert due.due_at == decision.not_before == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert due.last_sent_at is None


def test_a_lead_without_a_channel_waits_out_the_cooldown() -> None:
    lead = make_lead(whatsapp_opt_in=False, email_opt_in=False)
    decision = decide_one(lead)

    assert decision.reason == "no_eligible_channel"
    assert next_due(decision, lead, TENANT, NOON) == (NOON + timedelta(hours=72), None)


def test_a_cooldown_skip_is_due_when_the_cooldown_ends() -> None:
    lead = make_lead(last_contacted_at=NOON - timedelta(hours=10))
    decision = decide_one(lead)

    assert decision.reason == "cooldown"
    assert next_due(decision, lead, TENANT, NOON).due_at == NOON + timedelta(hours=62)


def test_a_repeated_intent_waits_for_the_leads_next_local_day() -> None:
    tenant = dataclasses.replace(TENANT, cooldown_hours=0)
    lead = make_lead()
    key = decide_one(lead, tenant=tenant).dispatch_key
    assert key is not None
    again = lead._replace(recent_dispatch_keys=frozenset({key}))
    decision = decide_one(again, tenant=tenant)

    due = next_due(decision, again, tenant, NOON)

    assert decision.reason == "duplicate_intent"
    assert due.due_at == datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # midnight in São Paulo


@pytest.mark.parametrize(
    "overrides", [{"opted_out_at": NOON}, {"stage": "customer"}, {"stage": "lost"}]
)
def test_suppressed_leads_are_parked_until_they_change(overrides: dict[str, object]) -> None:
    lead = make_lead(**overrides)
    decision = decide_one(lead)

    assert is_suppressed(lead)
    assert next_due(decision, lead, TENANT, NOON) == (None, None)


def test_a_deferral_by_the_caps_is_due_when_the_window_frees() -> None:
    tenant = dataclasses.replace(TENANT, limits={"whatsapp": ChannelLimit(1, 10)})
    usage = {"whatsapp": ChannelUsage(1, NOON - timedelta(minutes=20), 1, NOON)}
    lead = make_lead()
    decision = decide_one(lead, tenant=tenant, usage=usage)

    assert isinstance(decision, Decision)
    assert decision.reason == "rate_limited"
    assert next_due(decision, lead, tenant, NOON).due_at == NOON + timedelta(minutes=40)


# --- contact verdicts -----------------------------------------------------------------------


def test_a_stored_verdict_is_trusted_while_the_value_is_unchanged() -> None:
    # GIVEN a stored verdict that (deliberately) says the valid phone is invalid
    raw = make_lead()._replace(phone_e164=None, email_normalized=None)
    stored = Verdicts(
        phone=VALID_PHONE, phone_e164=None, email=VALID_EMAIL, email_normalized="x@y.z"
    )

    checked = with_verdicts(raw, stored)

    # THEN it was not validated again: the stored verdict stands, and nothing is to be saved
    assert checked.changed is None
    assert (checked.lead.phone_e164, checked.lead.email_normalized) == (None, "x@y.z")


def test_a_changed_value_is_validated_again_and_saved() -> None:
    raw = make_lead(phone="+55 11 91234-5678")._replace(phone_e164=None, email_normalized=None)
    stored = Verdicts(
        phone=VALID_PHONE, phone_e164=VALID_PHONE, email=VALID_EMAIL, email_normalized=VALID_EMAIL
    )

    checked = with_verdicts(raw, stored)

    assert checked.lead.phone_e164 == "+5511912345678"
    assert checked.changed == stored._replace(
        phone="+55 11 91234-5678", phone_e164="+5511912345678"
    )


def test_a_value_no_decision_can_read_is_not_validated() -> None:
    raw = make_lead(whatsapp_opt_in=False, email_opt_in=False, phone="+5511912345678")

    checked = with_verdicts(raw._replace(phone_e164=None, email_normalized=None), Verdicts())

    assert checked.changed is None
    assert checked.lead.phone_e164 is None


# --- properties -------------------------------------------------------------------------------

ZONES = sorted(
    name for name in zoneinfo.available_timezones() if "/" in name and not name.startswith("Etc")
)
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2045, 12, 31), timezones=st.just(UTC)
)
phones = st.one_of(st.none(), st.just(VALID_PHONE), st.just("+5521998877665"), st.text(max_size=16))
emails = st.one_of(st.none(), st.just(VALID_EMAIL), st.text(max_size=20))
leads = st.builds(
    make_lead,
    phone=phones,
    email=emails,
    whatsapp_opt_in=st.booleans(),
    email_opt_in=st.booleans(),
    opted_out_at=st.one_of(st.none(), st.just(NOON)),
    timezone=st.one_of(st.none(), st.sampled_from(ZONES), st.just("not/a-zone")),
    stage=st.sampled_from(["new", "nurturing", "meeting_requested", "customer", "lost"]),
    last_inbound_at=st.one_of(st.none(), instants),
)


@settings(max_examples=300, deadline=None)
@given(lead=leads, now=instants)
def test_an_opted_out_lead_never_gets_a_channel(lead: Lead, now: datetime) -> None:
    lead = lead._replace(opted_out_at=now - timedelta(seconds=1))

    decision = decide_one(lead, now=now)

    assert decision.channel is None
    assert decision.action == "skipped"


@settings(max_examples=300, deadline=None)
@given(lead=leads, now=instants, zone=st.sampled_from(ZONES))
def test_no_whatsapp_send_falls_in_quiet_hours(lead: Lead, now: datetime, zone: str) -> None:
    lead = lead._replace(timezone=zone)

    decision = decide_one(lead, now=now)

    if decision.channel == "whatsapp" and decision.action == "would_send":
        local = now.astimezone(ZoneInfo(zone))
        window = allowed_window(local.date())
        assert window is not None
        assert window[0] <= local.time() < window[1]
    if decision.reason == "quiet_hours":
        assert decision.not_before is not None
        opens = decision.not_before.astimezone(ZoneInfo(zone))
        window = allowed_window(opens.date())
        assert window is not None
        assert opens.time() == window[0]
        assert decision.not_before > now


@settings(max_examples=150, deadline=None)
@given(
    batch=st.lists(leads, min_size=1, max_size=40),
    per_hour=st.integers(min_value=0, max_value=10),
    per_day=st.integers(min_value=0, max_value=15),
    already=st.integers(min_value=0, max_value=12),
)
def test_a_channels_cap_is_never_exceeded_within_a_batch(
    batch: list[Lead], per_hour: int, per_day: int, already: int
) -> None:
    limit = ChannelLimit(per_hour=per_hour, per_day=per_day)
    tenant = dataclasses.replace(
        TENANT, limits={"whatsapp": limit, "email": limit, "calendar": limit}
    )
    seen = NOON - timedelta(minutes=30)
    usage = {
        channel: ChannelUsage(already, seen, already, seen)
        for channel in ("whatsapp", "email", "calendar")
    }

    decisions = decide_batch(batch, tenant, usage, NOON)

    for channel in ("whatsapp", "email", "calendar"):
        sends = sum(d.channel == channel and d.action == "would_send" for d in decisions)
        assert sends <= max(0, min(per_hour, per_day) - already)


@settings(max_examples=200, deadline=None)
@given(
    lead_id=st.uuids().map(str),
    template=st.sampled_from(["first_touch_v1", None]),
    day=st.dates(min_value=date(2024, 1, 1), max_value=date(2045, 12, 30)),
)
def test_dispatch_keys_depend_only_on_the_intent(
    lead_id: str, template: str | None, day: date
) -> None:
    key = dispatch_key("t-1", lead_id, "whatsapp", template, day)

    assert key == dispatch_key("t-1", lead_id, "whatsapp", template, day)
    assert key != dispatch_key("t-1", lead_id, "whatsapp", template, day + timedelta(days=1))
    assert key != dispatch_key("t-1", lead_id, "email", template, day)
    assert key != dispatch_key("t-2", lead_id, "whatsapp", template, day)
