"""Calendar months, as the contract counts package validity."""

import calendar
from datetime import UTC, datetime


def months_after(moment: datetime, months: int) -> datetime:
    """`moment` plus calendar months in UTC, clamped to the month's end (Jan 31 + 1 = Feb 28)."""
    moment = moment.astimezone(UTC)
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
