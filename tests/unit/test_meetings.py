"""Meeting slots: the tenant's next free slot, a batch's booking book, and ``meetingAt``."""

from __future__ import annotations

import io
import struct
from datetime import UTC, date, datetime, time, timedelta
from math import gcd
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dry_run.meetings import (
    BookingBook,
    NoFreeSlotError,
    meeting_at_iso,
    next_free_slot,
)
from dry_run.quiet_hours import is_national_holiday
from dry_run.senders import Meeting

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
MANAUS = ZoneInfo("America/Manaus")
NORONHA = ZoneInfo("America/Noronha")
NEW_YORK = ZoneInfo("America/New_York")
JERUSALEM = ZoneInfo("Asia/Jerusalem")
APIA = ZoneInfo("Pacific/Apia")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")


def sp(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A wall time in São Paulo."""
    return datetime(year, month, day, hour, minute, tzinfo=SAO_PAULO)


def slot(after: datetime, minutes: int = 30, taken: tuple[datetime, ...] = ()) -> datetime:
    return next_free_slot(after, tenant_zone=SAO_PAULO, meeting_minutes=minutes, taken=taken)


# -- alignment and the 24 h notice ------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (30, sp(2026, 11, 26, 10)),
        # 09:00, 09:45, 10:30: the first aligned start at or after Thursday 10:00.
        (45, sp(2026, 11, 26, 10, 30)),
        (60, sp(2026, 11, 26, 10)),
        (7, sp(2026, 11, 26, 10, 3)),
    ],
)
def test_decided_wednesday_10h_gives_the_first_aligned_slot_from_thursday_10h(
    minutes: int, expected: datetime
) -> None:
    # GIVEN a decision on Wednesday 25 Nov 2026 at 10:00 in São Paulo
    decided = sp(2026, 11, 25, 10)

    # WHEN the next free slot is asked for
    result = slot(decided, minutes)

    # THEN it is the first slot aligned to 09:00 + k x minutes, 24 h later or more
    assert result == expected


def test_a_slot_one_second_short_of_24_hours_is_not_offered() -> None:
    # GIVEN a decision one second after Wednesday 10:00
    decided = sp(2026, 11, 25, 10) + timedelta(seconds=1)

    # WHEN the next free slot is asked for
    result = slot(decided)

    # THEN Thursday 10:00 is too early, and 10:30 is offered
    assert result == sp(2026, 11, 26, 10, 30)


def test_decided_friday_17h_gives_monday_09h() -> None:
    # GIVEN a decision on Friday 27 Nov 2026 at 17:00 (24 h later is Saturday 17:00)
    decided = sp(2026, 11, 27, 17)

    # WHEN the next free slot is asked for
    result = slot(decided)

    # THEN the weekend is skipped
    assert result == sp(2026, 11, 30, 9)


def test_the_slot_is_in_the_tenants_zone_whatever_zone_the_decision_is_in() -> None:
    # GIVEN a decision instant given in UTC (Wednesday 10:00 in São Paulo)
    decided = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)

    # WHEN the next free slot is asked for a São Paulo tenant
    result = slot(decided)

    # THEN the slot is expressed in the tenant's zone
    assert result.tzinfo is SAO_PAULO
    assert result.replace(tzinfo=None) == datetime(2026, 11, 26, 10)


def test_business_hours_are_the_tenants_own() -> None:
    # GIVEN a decision at Wednesday 10:00 São Paulo, which is 11:00 in Noronha (UTC-2)
    decided = sp(2026, 11, 25, 10)

    # WHEN the next free slot is asked for a Noronha tenant
    result = next_free_slot(decided, tenant_zone=NORONHA, meeting_minutes=30, taken=())

    # THEN it is Thursday 11:00 on Noronha's clock
    assert result == datetime(2026, 11, 26, 11, tzinfo=NORONHA)


# -- the end of the day -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "decided", "expected"),
    [
        (60, sp(2026, 11, 25, 17), sp(2026, 11, 26, 17)),
        (45, sp(2026, 11, 25, 17, 15), sp(2026, 11, 26, 17, 15)),
        (540, sp(2026, 11, 25, 9), sp(2026, 11, 26, 9)),
    ],
)
def test_the_last_slot_ends_at_18h_exactly(
    minutes: int, decided: datetime, expected: datetime
) -> None:
    # GIVEN a decision 24 h before the day's last slot
    # WHEN the next free slot is asked for
    result = slot(decided, minutes)

    # THEN that last slot is offered, and it ends at 18:00
    assert result == expected
    assert (result + timedelta(minutes=minutes)).time() == time(18)


@pytest.mark.parametrize(
    ("minutes", "decided"),
    [
        (60, sp(2026, 11, 25, 17, 1)),
        (45, sp(2026, 11, 25, 17, 16)),
        # 09:00-16:00 is the only 7-hour slot: 16:00-23:00 would end after 18:00.
        (420, sp(2026, 11, 25, 9, 1)),
    ],
)
def test_a_slot_that_would_end_after_18h_does_not_exist(minutes: int, decided: datetime) -> None:
    # GIVEN a decision just after 24 h before Thursday's last slot
    # WHEN the next free slot is asked for
    result = slot(decided, minutes)

    # THEN Thursday has nothing left: Friday 09:00
    assert result == sp(2026, 11, 27, 9)


# -- holidays ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decided", "expected"),
    [
        # Good Friday, 3 Apr 2026.
        (sp(2026, 4, 2, 10), sp(2026, 4, 6, 9)),
        # Tiradentes, Tuesday 21 Apr 2026.
        (sp(2026, 4, 20, 10), sp(2026, 4, 22, 9)),
        # Independência, Monday 7 Sep 2026 (decided on the Sunday).
        (sp(2026, 9, 6, 10), sp(2026, 9, 8, 9)),
        # Nossa Senhora Aparecida, Monday 12 Oct 2026.
        (sp(2026, 10, 11, 10), sp(2026, 10, 13, 9)),
        # Finados, Monday 2 Nov 2026.
        (sp(2026, 11, 1, 10), sp(2026, 11, 3, 9)),
        # Consciência Negra, Friday 20 Nov 2026 (national since 2024).
        (sp(2026, 11, 19, 10), sp(2026, 11, 23, 9)),
        # Natal, Friday 25 Dec 2026.
        (sp(2026, 12, 24, 10), sp(2026, 12, 28, 9)),
    ],
)
def test_a_national_holiday_has_no_slots(decided: datetime, expected: datetime) -> None:
    # GIVEN a decision 24 h before 10:00 on a national holiday that falls on a weekday
    assert is_national_holiday((decided + timedelta(days=1)).date())

    # WHEN the next free slot is asked for
    result = slot(decided)

    # THEN the next business day's first slot is offered
    assert result == expected


def test_holidays_are_the_tenants_local_dates() -> None:
    # GIVEN a decision at Thursday 24 Dec 2026 23:30 in New York, when it is already
    # Christmas in UTC but not in New York
    decided = datetime(2026, 12, 24, 8, 30, tzinfo=NEW_YORK)

    # WHEN the next free slot is asked for a New York tenant
    result = next_free_slot(decided, tenant_zone=NEW_YORK, meeting_minutes=30, taken=())

    # THEN Friday 25 Dec (local) is skipped: Monday 28 Dec 09:00 New York
    assert result == datetime(2026, 12, 28, 9, tzinfo=NEW_YORK)


# -- taken slots ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "taken",
    [
        sp(2026, 11, 26, 10),
        datetime(2026, 11, 26, 13, 0, tzinfo=UTC),
        datetime(2026, 11, 26, 9, 0, tzinfo=MANAUS),
    ],
    ids=["tenant-zone", "utc", "manaus"],
)
def test_a_taken_slot_is_skipped_whatever_zone_it_is_given_in(taken: datetime) -> None:
    # GIVEN Thursday 10:00 São Paulo already taken, given in some zone
    # WHEN the next free slot after a Wednesday 10:00 decision is asked for
    result = slot(sp(2026, 11, 25, 10), taken=(taken,))

    # THEN the following slot is offered
    assert result == sp(2026, 11, 26, 10, 30)


def test_taken_slots_at_other_instants_do_not_block() -> None:
    # GIVEN 10:00 taken in New York's clock (a different instant from 10:00 São Paulo)
    taken = (datetime(2026, 11, 26, 10, 0, tzinfo=NEW_YORK),)

    # WHEN the next free slot is asked for
    result = slot(sp(2026, 11, 25, 10), taken=taken)

    # THEN São Paulo's 10:00 is still free
    assert result == sp(2026, 11, 26, 10)


def test_a_full_day_moves_the_slot_to_the_next_business_day() -> None:
    # GIVEN every 60-minute slot of Thursday and Friday taken
    taken = tuple(sp(2026, 11, day, hour) for day in (26, 27) for hour in range(9, 18))

    # WHEN the next free slot is asked for after a Wednesday 08:00 decision
    result = slot(sp(2026, 11, 25, 8), 60, taken)

    # THEN Monday 09:00 is offered
    assert result == sp(2026, 11, 30, 9)


def test_the_search_is_bounded_and_says_why() -> None:
    # GIVEN a tenant whose single daily slot is taken for more than a year
    first = date(2026, 11, 26)
    taken = tuple(
        datetime.combine(first + timedelta(days=n), time(9), SAO_PAULO) for n in range(400)
    )

    # WHEN the next free slot is asked for
    # THEN the search stops with an error naming the horizon
    with pytest.raises(NoFreeSlotError, match="within 366 days"):
        slot(sp(2026, 11, 25, 9), 540, taken)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [0, -30, 541, 24 * 60])
def test_an_unusable_meeting_length_is_refused(minutes: int) -> None:
    # GIVEN a meeting length outside 1..540 minutes
    # WHEN the next free slot is asked for
    # THEN a ValueError names the setting and the value
    with pytest.raises(ValueError, match=rf"meeting_minutes .* got {minutes}"):
        slot(sp(2026, 11, 25, 10), minutes)


def test_a_booking_book_refuses_an_unusable_meeting_length() -> None:
    # GIVEN / WHEN a book is opened for 0-minute meetings
    # THEN a ValueError names the setting
    with pytest.raises(ValueError, match="meeting_minutes"):
        BookingBook(tenant_zone=SAO_PAULO, meeting_minutes=0)


def test_a_naive_decision_instant_is_refused() -> None:
    # GIVEN a decision instant without a UTC offset
    # WHEN the next free slot is asked for
    # THEN a ValueError names it
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        slot(datetime(2026, 11, 25, 10))


def test_a_naive_taken_slot_is_refused() -> None:
    # GIVEN a taken slot without a UTC offset (which instant it is cannot be known)
    # WHEN the next free slot is asked for
    # THEN a ValueError says so
    with pytest.raises(ValueError, match="taken slot must be an aware datetime"):
        slot(sp(2026, 11, 25, 10), taken=(datetime(2026, 11, 26, 10),))


# -- daylight saving time ---------------------------------------------------------------------


def test_slots_follow_the_wall_clock_across_a_dst_change() -> None:
    # GIVEN a New York tenant and a decision on Friday 6 Mar 2026 09:00 EST; clocks go forward
    # on Sunday 8 Mar
    decided = datetime(2026, 3, 6, 9, tzinfo=NEW_YORK)

    # WHEN the next free slot is asked for
    result = next_free_slot(decided, tenant_zone=NEW_YORK, meeting_minutes=30, taken=())

    # THEN it is Monday 09:00 on the clock, now EDT (UTC-4): 13:00 UTC, not 14:00
    assert result == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert result.utcoffset() == timedelta(hours=-4)


def test_a_taken_utc_instant_maps_to_the_wall_slot_of_its_own_offset() -> None:
    # GIVEN 14:00 UTC on Monday 9 Mar 2026 taken (09:00 under EST, but 10:00 under EDT)
    taken = (datetime(2026, 3, 9, 14, 0, tzinfo=UTC),)

    # WHEN the next free slot is asked for twice in a batch
    book = BookingBook(tenant_zone=NEW_YORK, meeting_minutes=60, taken=taken)
    decided = datetime(2026, 3, 6, 9, tzinfo=NEW_YORK)
    first, second = book.propose(decided), book.propose(decided)

    # THEN 09:00 EDT is free and 10:00 EDT is skipped
    assert first.starts_at == datetime(2026, 3, 9, 9, tzinfo=NEW_YORK)
    assert second.starts_at == datetime(2026, 3, 9, 11, tzinfo=NEW_YORK)


def test_the_24_hours_are_real_time_across_a_dst_change() -> None:
    # GIVEN a Jerusalem tenant decided on Thursday 26 Mar 2026 10:00 (UTC+2); clocks go forward
    # at 02:00 on Friday 27 Mar
    decided = datetime(2026, 3, 26, 10, tzinfo=JERUSALEM)

    # WHEN the next 60-minute slot is asked for
    result = next_free_slot(decided, tenant_zone=JERUSALEM, meeting_minutes=60, taken=())

    # THEN 24 h later is 11:00 on Friday's clock (UTC+3), not 10:00
    assert result == datetime(2026, 3, 27, 11, tzinfo=JERUSALEM)
    assert result.astimezone(UTC) - decided.astimezone(UTC) == timedelta(hours=24)


def test_wall_times_that_do_not_exist_are_skipped() -> None:
    # GIVEN Samoa, which skipped Friday 30 Dec 2011 entirely (UTC-10 to UTC+14), and a decision
    # on Wednesday 28 Dec 18:00: 24 h later Thursday's slots are over
    decided = datetime(2011, 12, 28, 18, tzinfo=APIA)

    # WHEN the next free slot is asked for
    result = next_free_slot(decided, tenant_zone=APIA, meeting_minutes=30, taken=())

    # THEN no slot is invented on the missing Friday (zoneinfo would map it to Saturday):
    # Monday 2 Jan 2012 09:00
    assert result == datetime(2012, 1, 2, 9, tzinfo=APIA)
    assert result.astimezone(UTC) == datetime(2012, 1, 1, 19, tzinfo=UTC)


def midday_gap_zone() -> ZoneInfo:
    """A fake zone: UTC-3, then UTC-2 from Thursday 26 Nov 2026 10:00 local (13:00 UTC).

    No real zone moved its clocks forward inside weekday business hours between 1970 and 2040,
    so the gap is built as a minimal TZif (version 1) file.
    """
    change = int(datetime(2026, 11, 26, 13, tzinfo=UTC).timestamp())
    names = b"-03\0-02\0"
    tzif = (
        b"TZif"
        + b"\0" * 16
        # isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        + struct.pack(">6l", 0, 0, 0, 1, 2, len(names))
        + struct.pack(">l", change)
        + struct.pack(">B", 1)
        + struct.pack(">lBB", -3 * 3600, 0, 0)
        + struct.pack(">lBB", -2 * 3600, 1, 4)
        + names
    )
    return ZoneInfo.from_file(io.BytesIO(tzif), key="Test/MiddayGap")


def test_a_slot_inside_a_dst_gap_is_skipped() -> None:
    # GIVEN a zone whose clocks jump from 10:00 to 11:00 on Thursday, and Thursday 09:30 taken
    zone = midday_gap_zone()
    decided = datetime(2026, 11, 25, 9, 30, tzinfo=zone)
    taken = (datetime(2026, 11, 26, 9, 30, tzinfo=zone),)

    # WHEN the next free 30-minute slot is asked for
    result = next_free_slot(decided, tenant_zone=zone, meeting_minutes=30, taken=taken)

    # THEN 10:00 and 10:30, which never show on the clock, are skipped: 11:00 (UTC-2)
    assert result.replace(tzinfo=None) == datetime(2026, 11, 26, 11)
    assert result.utcoffset() == timedelta(hours=-2)


def test_a_meeting_that_a_dst_gap_pushes_past_18h_does_not_fit() -> None:
    # GIVEN the same zone, where Thursday's 09:00-18:00 lasts 8 hours of real time
    zone = midday_gap_zone()
    decided = datetime(2026, 11, 25, 9, tzinfo=zone)

    # WHEN the next free 540-minute slot is asked for
    result = next_free_slot(decided, tenant_zone=zone, meeting_minutes=540, taken=())

    # THEN Thursday 09:00 (which would end at 19:00 on the clock) is skipped: Friday 09:00
    assert result == datetime(2026, 11, 27, 9, tzinfo=zone)


def test_the_first_day_searched_is_the_tenants_local_day() -> None:
    # GIVEN a Los Angeles tenant decided on Wednesday 24 Jun 2026 17:00 PDT, already Thursday
    # in UTC
    decided = datetime(2026, 6, 24, 17, tzinfo=LOS_ANGELES)

    # WHEN the next 60-minute slot is asked for
    result = next_free_slot(decided, tenant_zone=LOS_ANGELES, meeting_minutes=60, taken=())

    # THEN Thursday's last slot (local) is offered, not Friday's first
    assert result == datetime(2026, 6, 25, 17, tzinfo=LOS_ANGELES)


# -- the booking book -------------------------------------------------------------------------


def test_a_batch_never_proposes_the_same_slot_twice() -> None:
    # GIVEN a batch's book with the ledger's Thursday 10:30 taken
    book = BookingBook(tenant_zone=SAO_PAULO, meeting_minutes=30, taken=(sp(2026, 11, 26, 10, 30),))
    decided = sp(2026, 11, 25, 10)

    # WHEN three decisions at the same instant ask for a slot
    proposed = [book.propose(decided).starts_at for _ in range(3)]

    # THEN each gets the next free one, skipping the ledger's and the batch's own
    assert proposed == [sp(2026, 11, 26, 10), sp(2026, 11, 26, 11), sp(2026, 11, 26, 11, 30)]


def test_an_earlier_decision_after_a_later_one_still_gets_the_earliest_free_slot() -> None:
    # GIVEN a book that proposed Thursday 11:00 for a decision at Wednesday 11:00
    book = BookingBook(tenant_zone=SAO_PAULO, meeting_minutes=30)
    book.propose(sp(2026, 11, 25, 11))

    # WHEN decisions at Wednesday 10:00 follow
    proposed = [book.propose(sp(2026, 11, 25, 10)).starts_at for _ in range(3)]

    # THEN they fill 10:00 and 10:30, then skip the 11:00 already proposed
    assert proposed == [sp(2026, 11, 26, 10), sp(2026, 11, 26, 10, 30), sp(2026, 11, 26, 11, 30)]


def test_a_proposal_is_a_meeting_of_the_tenants_length_in_its_zone() -> None:
    # GIVEN a book for 45-minute meetings in Manaus
    book = BookingBook(tenant_zone=MANAUS, meeting_minutes=45)

    # WHEN a slot is proposed
    meeting = book.propose(datetime(2026, 11, 25, 10, tzinfo=MANAUS))

    # THEN it is a Meeting from start to start + 45 minutes, named by the zone's key
    assert meeting == Meeting(
        starts_at=datetime(2026, 11, 26, 10, 30, tzinfo=MANAUS),
        ends_at=datetime(2026, 11, 26, 11, 15, tzinfo=MANAUS),
        timezone="America/Manaus",
    )


def test_the_book_records_what_it_proposed() -> None:
    # GIVEN an empty book
    book = BookingBook(tenant_zone=SAO_PAULO, meeting_minutes=30)

    # WHEN a slot is proposed
    meeting = book.propose(sp(2026, 11, 25, 10))

    # THEN the book holds it as taken
    assert book.taken == {meeting.starts_at}


# -- meetingAt --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meeting", "expected"),
    [
        (
            Meeting(sp(2026, 11, 26, 10), sp(2026, 11, 26, 10, 30), "America/Sao_Paulo"),
            "2026-11-26T10:00:00-03:00",
        ),
        (
            Meeting(
                datetime(2026, 11, 26, 12, tzinfo=UTC),
                datetime(2026, 11, 26, 13, tzinfo=UTC),
                "America/Noronha",
            ),
            "2026-11-26T10:00:00-02:00",
        ),
        (
            Meeting(
                datetime(2026, 3, 9, 9, tzinfo=NEW_YORK),
                datetime(2026, 3, 9, 10, tzinfo=NEW_YORK),
                "America/New_York",
            ),
            "2026-03-09T09:00:00-04:00",
        ),
    ],
)
def test_meeting_at_is_iso_8601_with_the_tenants_offset(meeting: Meeting, expected: str) -> None:
    # GIVEN a proposed meeting
    # WHEN its meetingAt is rendered
    # THEN it carries the tenant's UTC offset at that instant
    assert meeting_at_iso(meeting) == expected


# -- properties -------------------------------------------------------------------------------

# Whole-hour offsets only (see the brute force below).
ZONES = [SAO_PAULO, MANAUS, NORONHA, NEW_YORK, LOS_ANGELES, TOKYO]
OPENS, CLOSES = 9 * 60, 18 * 60

any_instants = st.datetimes(
    min_value=datetime(2024, 1, 1),
    max_value=datetime(2045, 11, 30),
    timezones=st.sampled_from([UTC, *ZONES]),
    allow_imaginary=False,
)
# Whole minutes too, so that decisions exactly 24 h before a slot come up.
decision_instants = st.one_of(
    any_instants, any_instants.map(lambda d: d.replace(second=0, microsecond=0))
)
meeting_lengths = st.one_of(
    st.sampled_from([15, 30, 45, 60, 90, 540]), st.integers(min_value=1, max_value=540)
)


def is_valid_free_slot(
    instant: datetime,
    *,
    zone: ZoneInfo,
    minutes: int,
    earliest: datetime,
    taken: frozenset[datetime],
) -> bool:
    """The domain's rule read off an instant, independently of how the finder walks the days."""
    local = instant.astimezone(zone)
    minute_of_day = local.hour * 60 + local.minute
    return (
        local.second == 0
        and local.microsecond == 0
        and local.weekday() < 5
        and not is_national_holiday(local.date())
        and minute_of_day >= OPENS
        and (minute_of_day - OPENS) % minutes == 0
        and minute_of_day + minutes <= CLOSES
        and instant >= earliest
        and instant.astimezone(UTC) not in taken
    )


@st.composite
def taken_near(draw: st.DrawFn, after: datetime, zone: ZoneInfo, minutes: int) -> list[datetime]:
    """Slots around the answer (some in UTC or another zone), plus unrelated instants."""
    first_day = (after + timedelta(hours=24)).astimezone(zone).date()
    per_day = (CLOSES - OPENS) // minutes
    picks = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=5),
                st.integers(min_value=0, max_value=min(per_day, 40) - 1),
                st.sampled_from([zone, UTC, *ZONES]),
            ),
            max_size=30,
        )
    )
    taken = [
        (
            datetime.combine(first_day + timedelta(days=day), time(9), zone)
            + timedelta(minutes=k * minutes)
        ).astimezone(shown_in)
        for day, k, shown_in in picks
    ]
    noise = draw(st.lists(st.datetimes(timezones=st.just(UTC)), max_size=3))
    return taken + noise


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(), after=decision_instants, zone=st.sampled_from(ZONES), minutes=meeting_lengths
)
def test_the_slot_is_valid_and_no_earlier_valid_slot_is_free(
    data: st.DataObject, after: datetime, zone: ZoneInfo, minutes: int
) -> None:
    # GIVEN a decision instant, a tenant zone, a meeting length and taken slots
    taken = data.draw(taken_near(after, zone, minutes))
    taken_utc = frozenset(t.astimezone(UTC) for t in taken)
    earliest = after.astimezone(UTC) + timedelta(hours=24)

    # WHEN the next free slot is asked for
    result = next_free_slot(after, tenant_zone=zone, meeting_minutes=minutes, taken=taken)

    # THEN it is aligned, in business hours on a business day, 24 h later or more and free
    assert result.tzinfo is zone
    assert is_valid_free_slot(
        result, zone=zone, minutes=minutes, earliest=earliest, taken=taken_utc
    )
    # AND no earlier instant is a valid free slot (brute force). Every offset of these zones is
    # a whole number of hours, so aligned starts fall on UTC minutes that are multiples of
    # gcd(minutes, 60): stepping by that visits every candidate.
    step = gcd(minutes, 60)
    candidate = earliest.replace(second=0, microsecond=0)
    candidate -= timedelta(minutes=candidate.minute % step)
    while candidate < result:
        assert not is_valid_free_slot(
            candidate, zone=zone, minutes=minutes, earliest=earliest, taken=taken_utc
        ), f"{candidate.astimezone(zone)} is free and earlier than {result}"
        candidate += timedelta(minutes=step)


@settings(max_examples=100, deadline=None)
@given(
    first=decision_instants,
    gaps=st.lists(st.integers(min_value=-3 * 3600, max_value=6 * 3600), min_size=1, max_size=25),
    zone=st.sampled_from(ZONES),
    minutes=meeting_lengths,
)
def test_a_book_proposes_what_the_finder_would_given_everything_taken_so_far(
    first: datetime, gaps: list[int], zone: ZoneInfo, minutes: int
) -> None:
    # GIVEN a batch's decisions at instants that mostly move forward, sometimes back
    decisions = [first]
    for gap in gaps:
        decisions.append(decisions[-1] + timedelta(seconds=gap))
    book = BookingBook(tenant_zone=zone, meeting_minutes=minutes)
    taken: list[datetime] = []

    for decided in decisions:
        # WHEN each asks the book for a slot
        meeting = book.propose(decided)

        # THEN it is the finder's answer with every earlier proposal taken, never a repeat
        expected = next_free_slot(decided, tenant_zone=zone, meeting_minutes=minutes, taken=taken)
        assert meeting.starts_at == expected
        assert meeting.ends_at - meeting.starts_at == timedelta(minutes=minutes)
        taken.append(meeting.starts_at)
    assert len(set(taken)) == len(taken)
