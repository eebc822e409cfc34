"""Meeting slots: the tenant's next free slot for a calendar invitation (shared/DOMAIN.md).

A slot starts at 09:00 + k x ``meeting_minutes`` in the tenant's zone and ends by 18:00, Monday
to Friday, never on a Brazilian national holiday, at least 24 h after the decision, and not at
an instant already taken (the mode's ledger and the batch's earlier proposals). Pure: the
decision instant, the zone, the duration and the taken slots are passed in.

Written by hand: no calendar library computes aligned business-hour slots; the holidays come
from the project's generated table, the time zones from zoneinfo.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dry_run.exceptions import NoFreeSlotError
from dry_run.quiet_hours import is_national_holiday

BUSINESS_HOURS = (time(9), time(18))
MIN_MEETING_MINUTES = 1
# The whole 09:00-18:00 day: a longer meeting fits no slot.
MAX_MEETING_MINUTES = 9 * 60
NOTICE = timedelta(hours=24)
# Bounds the search so that a full ledger cannot loop forever; a year is far beyond any backlog.
SEARCH_DAYS = 366


@dataclass(frozen=True)
class Meeting:
    """The slot a calendar invitation proposes (aware datetimes) in the tenant's zone."""

    starts_at: datetime
    ends_at: datetime
    timezone: str


def _check_meeting_minutes(meeting_minutes: int) -> None:
    if not MIN_MEETING_MINUTES <= meeting_minutes <= MAX_MEETING_MINUTES:
        raise ValueError(
            f"meeting_minutes must be between {MIN_MEETING_MINUTES} and {MAX_MEETING_MINUTES} "
            f"(a meeting must fit 09:00-18:00), got {meeting_minutes!r}: "
            "fix the tenant's meeting_minutes"
        )


def _check_aware(name: str, value: datetime) -> None:
    if value.utcoffset() is None:
        raise ValueError(
            f"{name} must be an aware datetime (with a UTC offset), got naive {value.isoformat()}"
        )


def _utc_instants(taken: Collection[datetime]) -> frozenset[datetime]:
    # In UTC so that membership compares instants: datetimes sharing a tzinfo compare by wall
    # time and ignore `fold`, which would confuse the two occurrences of an ambiguous hour.
    for slot in taken:
        _check_aware("every taken slot", slot)
    return frozenset(slot.astimezone(UTC) for slot in taken)


def _is_business_day(day: date) -> bool:
    return day.weekday() < 5 and not is_national_holiday(day)


def _slots_of_day(day: date, zone: ZoneInfo, meeting_minutes: int) -> Iterator[datetime]:
    """The slots of one business day, in order, as aware datetimes in ``zone``."""
    opens = datetime.combine(day, BUSINESS_HOURS[0])
    closes = datetime.combine(day, BUSINESS_HOURS[1])
    duration = timedelta(minutes=meeting_minutes)
    wall = opens
    while wall + duration <= closes:
        # fold=0: an ambiguous wall time (a DST fold) means its first occurrence.
        start = wall.replace(tzinfo=zone)
        wall += duration
        # A wall time inside a DST gap does not exist: zoneinfo would still give it an offset,
        # and the round trip through UTC lands elsewhere.
        if start.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != start.replace(
            tzinfo=None
        ):
            continue
        # The meeting lasts meeting_minutes of real time; across a DST change inside business
        # hours that can end later on the clock than its wall-time slot.
        ends = (start.astimezone(UTC) + duration).astimezone(zone)
        if ends.replace(tzinfo=None) > closes:
            continue
        yield start


def next_free_slot(
    after: datetime,
    *,
    tenant_zone: ZoneInfo,
    meeting_minutes: int,
    taken: Collection[datetime],
) -> datetime:
    """Return the start of the tenant's next free slot, aware in ``tenant_zone``.

    ``after`` is the decision instant; the slot starts at least 24 h of real time later.
    ``taken`` holds the starts already proposed or booked for the tenant, in any zone.
    Raises ValueError for a naive datetime or an unusable ``meeting_minutes``, and
    NoFreeSlotError when no slot is free within ``SEARCH_DAYS`` days.
    """
    _check_meeting_minutes(meeting_minutes)
    _check_aware("after", after)
    return _first_free(after, tenant_zone, meeting_minutes, _utc_instants(taken))


def _first_free(
    after: datetime,
    tenant_zone: ZoneInfo,
    meeting_minutes: int,
    taken_instants: Container[datetime],
    not_before: datetime | None = None,
) -> datetime:
    earliest = after.astimezone(UTC) + NOTICE
    if not_before is not None:
        earliest = max(earliest, not_before)
    first_day = earliest.astimezone(tenant_zone).date()
    for offset in range(SEARCH_DAYS):
        day = first_day + timedelta(days=offset)
        if not _is_business_day(day):
            continue
        for start in _slots_of_day(day, tenant_zone, meeting_minutes):
            instant = start.astimezone(UTC)
            if instant >= earliest and instant not in taken_instants:
                return start
    raise NoFreeSlotError(
        f"no free {meeting_minutes}-minute slot in {tenant_zone.key} within {SEARCH_DAYS} days "
        f"of {earliest.isoformat()}: release booked slots or shorten meeting_minutes"
    )


class BookingBook:
    """The taken slots of one tenant during one batch: the ledger's and the batch's own.

    Successive ``propose`` calls never return the same slot twice.
    """

    def __init__(
        self,
        *,
        tenant_zone: ZoneInfo,
        meeting_minutes: int,
        taken: Collection[datetime] = (),
    ) -> None:
        _check_meeting_minutes(meeting_minutes)
        self._zone = tenant_zone
        self._duration = timedelta(minutes=meeting_minutes)
        self._meeting_minutes = meeting_minutes
        self._taken: set[datetime] = set(_utc_instants(taken))
        # (decision instant, slot) of the last proposal, in UTC: every slot from 24 h after that
        # instant up to that slot is taken, so a later decision resumes there. Keeps a batch
        # linear instead of rescanning the slots it has already filled.
        self._last: tuple[datetime, datetime] | None = None

    @property
    def taken(self) -> frozenset[datetime]:
        """Every taken start so far, in UTC."""
        return frozenset(self._taken)

    def propose(self, after: datetime) -> Meeting:
        """Return the next free slot after the decision instant ``after`` and record it."""
        _check_aware("after", after)
        decided = after.astimezone(UTC)
        resume = None
        if self._last is not None and decided >= self._last[0]:
            resume = self._last[1]
        # The book's slots are already checked and in UTC: no copy per proposal.
        starts_at = _first_free(decided, self._zone, self._meeting_minutes, self._taken, resume)
        self._taken.add(starts_at.astimezone(UTC))
        self._last = (decided, starts_at.astimezone(UTC))
        ends_at = (starts_at.astimezone(UTC) + self._duration).astimezone(self._zone)
        return Meeting(starts_at=starts_at, ends_at=ends_at, timezone=self._zone.key)


def meeting_at_iso(meeting: Meeting) -> str:
    """Return the meeting's start as ISO 8601 with the tenant's UTC offset (``meetingAt``)."""
    return meeting.starts_at.astimezone(ZoneInfo(meeting.timezone)).isoformat(timespec="seconds")
