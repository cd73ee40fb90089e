from datetime import UTC, datetime, timedelta, timezone

import pytest

from credits.payments.months import months_after


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2027, 1, 31, 7, 0, tzinfo=UTC), 1, datetime(2027, 2, 28, 7, 0, tzinfo=UTC)),
        (datetime(2028, 1, 31, 7, 0, tzinfo=UTC), 1, datetime(2028, 2, 29, 7, 0, tzinfo=UTC)),
        (datetime(2026, 11, 25, 7, 0, tzinfo=UTC), 1, datetime(2026, 12, 25, 7, 0, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), 1, datetime(2027, 1, 31, 23, 59, tzinfo=UTC)),
        (datetime(2027, 3, 31, 0, 0, tzinfo=UTC), 1, datetime(2027, 4, 30, 0, 0, tzinfo=UTC)),
        (datetime(2027, 1, 31, 0, 0, tzinfo=UTC), 13, datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
    ],
)
def test_a_calendar_month_later_is_clamped_to_the_end_of_a_shorter_month(
    start: datetime, months: int, expected: datetime
) -> None:
    assert months_after(start, months) == expected


def test_months_are_counted_in_utc_whatever_zone_the_time_comes_in() -> None:
    # 2027-02-01 01:00 at UTC+2 is 2027-01-31 23:00 UTC: one month later is Feb 28, 23:00 UTC.
    start = datetime(2027, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))

    assert months_after(start, 1) == datetime(2027, 2, 28, 23, 0, tzinfo=UTC)
