"""WhatsApp quiet hours: when a lead may be messaged, in the lead's own local time.

Allowed Monday to Friday 09:00-21:00 and Saturday 10:00-16:00; never on Sunday or on a
Brazilian national holiday.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from dry_run.holidays_br import FIRST_YEAR, LAST_YEAR, NATIONAL_HOLIDAYS

WEEKDAY_WINDOW = (time(9), time(21))
SATURDAY_WINDOW = (time(10), time(16))
# Long enough to cross any run of holidays and Sundays.
_LOOKAHEAD_DAYS = 14


class HolidayTableError(RuntimeError):
    """A date beyond the generated holiday table, with no holidays package to ask."""


@lru_cache(maxsize=64)
def _library_holidays(year: int) -> frozenset[date]:
    # Beyond the generated table: ask the library itself where it is installed (developer
    # machines); the Lambda artifact ships only the table.
    try:
        import holidays  # noqa: PLC0415
    except ImportError:
        raise HolidayTableError(
            f"no Brazilian holiday table for {year} (it covers {FIRST_YEAR}-{LAST_YEAR}): "
            "raise LAST_YEAR in devtools/gen_holidays.py and run `nox -s holidays`"
        ) from None
    return frozenset(holidays.country_holidays("BR", years=year))


def is_national_holiday(day: date) -> bool:
    """Whether ``day`` is a Brazilian national holiday."""
    if FIRST_YEAR <= day.year <= LAST_YEAR:
        return day in NATIONAL_HOLIDAYS
    return day in _library_holidays(day.year)


def allowed_window(day: date) -> tuple[time, time] | None:
    """The local send window of a day, or None when the whole day is quiet."""
    if is_national_holiday(day):
        return None
    weekday = day.weekday()
    if weekday < 5:
        return WEEKDAY_WINDOW
    if weekday == 5:
        return SATURDAY_WINDOW
    return None


def next_allowed_start(now: datetime, zone: ZoneInfo) -> datetime | None:
    """None when ``now`` is inside a window in ``zone``; else when the next window opens (UTC)."""
    local = now.astimezone(zone)
    for offset in range(_LOOKAHEAD_DAYS + 1):
        day = local.date() + timedelta(days=offset)
        window = allowed_window(day)
        if window is None:
            continue
        start = datetime.combine(day, window[0], tzinfo=zone)
        end = datetime.combine(day, window[1], tzinfo=zone)
        if offset == 0 and start <= local < end:
            return None
        if local < start:
            return start.astimezone(now.tzinfo)
    raise AssertionError(f"no send window within {_LOOKAHEAD_DAYS} days of {local}")
