"""Template tags of the admin console: today's figures on the index page."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django import template
from django.db.models import Sum

from credits import clock
from credits.models import EntryKind, LedgerEntry, LotSource

register = template.Library()


@dataclass(frozen=True)
class DayTotals:
    day: str
    sold: int
    consumed: int
    expired: int


def day_totals(*, now: datetime | None = None) -> DayTotals:
    """Credits sold (grants of purchase lots), consumed (charges) and expired (expiries) in the
    UTC day of `now`, as positive numbers: three aggregates over one day's range of the ledger."""
    now = now or clock.now()
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=start + timedelta(1))

    def total(**lookups: str) -> int:
        return today.filter(**lookups).aggregate(total=Sum("amount"))["total"] or 0

    return DayTotals(
        day=start.date().isoformat(),
        sold=total(kind=EntryKind.GRANT, lot__source=LotSource.PURCHASE),
        consumed=-total(kind=EntryKind.CHARGE),
        expired=-total(kind=EntryKind.EXPIRE),
    )


@register.simple_tag
def credits_today() -> DayTotals:
    return day_totals()


@register.filter
def thousands(value: int) -> str:
    """12345 → "12,345"."""
    return f"{value:,}"
