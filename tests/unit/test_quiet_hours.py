"""WhatsApp quiet hours and the generated holiday table."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import holidays
import pytest

from devtools.gen_holidays import render
from dry_run import holidays_br
from dry_run.quiet_hours import is_national_holiday, next_allowed_start

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
MANAUS = ZoneInfo("America/Manaus")


def test_generated_table_equals_what_the_holidays_library_computes() -> None:
    library = holidays.country_holidays(
        "BR", years=range(holidays_br.FIRST_YEAR, holidays_br.LAST_YEAR + 1)
    )

    assert set(library) == holidays_br.NATIONAL_HOLIDAYS


def test_generated_module_is_current() -> None:
    from pathlib import Path

    assert render() == Path(holidays_br.__file__).read_text(encoding="utf-8"), (
        "run `nox -s holidays` to regenerate dry_run/holidays_br.py"
    )


def test_years_beyond_the_table_fall_back_to_the_library() -> None:
    assert is_national_holiday(date(holidays_br.LAST_YEAR + 1, 12, 25))
    assert not is_national_holiday(date(holidays_br.LAST_YEAR + 1, 12, 23))


@pytest.mark.parametrize(
    ("instant", "zone", "expected"),
    [
        # Wednesday 12:00 in São Paulo: inside the weekday window.
        (datetime(2026, 11, 25, 15, 0, tzinfo=UTC), SAO_PAULO, None),
        # Wednesday 23:00 in São Paulo: next window is Thursday 09:00 local.
        (datetime(2026, 11, 26, 2, 0, tzinfo=UTC), SAO_PAULO, datetime(2026, 11, 26, 12, 0)),
        # Wednesday 08:59 in Manaus (UTC-4): opens at 09:00 Manaus, 13:00 UTC.
        (datetime(2026, 11, 25, 12, 59, tzinfo=UTC), MANAUS, datetime(2026, 11, 25, 13, 0)),
        # Saturday 16:30: closed until Monday 09:00 (Sunday is quiet).
        (datetime(2026, 11, 28, 19, 30, tzinfo=UTC), SAO_PAULO, datetime(2026, 11, 30, 12, 0)),
        # Saturday 10:30: inside the Saturday window.
        (datetime(2026, 11, 28, 13, 30, tzinfo=UTC), SAO_PAULO, None),
        # Christmas (Friday) 11:00: holiday; Saturday 26th opens at 10:00.
        (datetime(2026, 12, 25, 14, 0, tzinfo=UTC), SAO_PAULO, datetime(2026, 12, 26, 13, 0)),
        # 21:00 sharp is already closed.
        (datetime(2026, 11, 26, 0, 0, tzinfo=UTC), SAO_PAULO, datetime(2026, 11, 26, 12, 0)),
    ],
)
def test_next_allowed_start(instant: datetime, zone: ZoneInfo, expected: datetime | None) -> None:
    result = next_allowed_start(instant, zone)

    assert result == (expected.replace(tzinfo=UTC) if expected else None)
