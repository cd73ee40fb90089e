"""The admin index's figures of the day (UTC): credits sold, consumed and expired.

Consumed credits come from the hourly usage buckets, not from the ledger (issue 23): at 100
million requests a day, summing the day's `charge` entries reads up to 100 million rows, while
the buckets of a day are one row per (account, key, model, hour) with usage, read through
`usagebucket_hour`. Every charge is a settled request's (the settle writes the charge and its
usage record in one transaction, and the record's trigger adds it to its bucket), so the sum
of the buckets' `credits` is the sum of the day's charges. Sold (grants of purchase lots) and
expired credits stay in the ledger: they are a few entries a day, read through
`entry_kind_created` (kind, created_at), whatever the number of charges.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Sum

from credits import clock
from credits.gateway.models import UsageBucket
from credits.models import EntryKind, LedgerEntry, LotSource


@dataclass(frozen=True)
class DayTotals:
    day: str
    sold: int
    consumed: int
    expired: int


def day_totals(*, now: datetime | None = None) -> DayTotals:
    """Credits sold (grants of purchase lots), consumed (charged requests) and expired in the
    UTC day of `now`, as positive numbers: two aggregates over the day's range of the ledger's
    rare kinds and one over the day's hourly buckets."""
    now = now or clock.now()
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    today = LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)

    def total(**lookups: str) -> int:
        return today.filter(**lookups).aggregate(total=Sum("amount"))["total"] or 0

    buckets = UsageBucket.objects.filter(hour__gte=start, hour__lt=end)
    return DayTotals(
        day=start.date().isoformat(),
        sold=total(kind=EntryKind.GRANT, lot__source=LotSource.PURCHASE),
        consumed=buckets.aggregate(total=Sum("credits"))["total"] or 0,
        expired=-total(kind=EntryKind.EXPIRE),
    )
