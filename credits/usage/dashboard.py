"""The admin index's figures of the day (UTC): credits sold, consumed and expired.

Consumed credits come from the hourly usage buckets, not from the ledger (issue 23): at 100
million requests a day, summing the day's `charge` entries reads up to 100 million rows, while
the buckets of a day are one row per (account, key, model, hour) with usage, read through
`usagebucket_hour`. Every charge is a settled request's (the settle writes the charge and its
usage record in one transaction, and the record's trigger adds it to its bucket), so the sum
of the buckets' `credits` is the sum of the day's charges. Sold (grants of purchase lots) and
expired credits stay in the ledger: they are a few entries a day, read through
`entry_kind_created` (kind, created_at), whatever the number of charges.

The day's closed hours are read from their roll-ups (`UsageHour`, one row per hour, written by
the beat once an hour can no longer change), the others from their buckets: the page reads an
hour's buckets (the current one, and the last one in its first minutes), not a day's.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q, Sum

from credits import clock
from credits.gateway.models import UsageBucket
from credits.models import EntryKind, LedgerEntry, LotSource

from .models import UsageHour

HOUR = timedelta(hours=1)
# How long after its end an hour's buckets may still change: a settle stamped in the hour
# commits within the statement (30 s) and idle-in-transaction (60 s) timeouts.
SETTLE_GRACE = timedelta(minutes=5)
# How far back the beat fills in hours it missed (a beat down for longer leaves older hours to
# their buckets: slower pages, never wrong ones).
ROLL_UP_HORIZON = timedelta(days=2)


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

    return DayTotals(
        day=start.date().isoformat(),
        sold=total(kind=EntryKind.GRANT, lot__source=LotSource.PURCHASE),
        consumed=consumed_between(start, end),
        expired=-total(kind=EntryKind.EXPIRE),
    )


def _hour_ranges(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Ascending hours as [start, end) ranges of consecutive ones."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges


def consumed_between(start: datetime, end: datetime) -> int:
    """Credits charged in whole UTC hours [start, end): the rolled-up hours' totals, plus one
    sum over the buckets of the others (consecutive ones as a range of `usagebucket_hour`)."""
    rolled = dict(
        UsageHour.objects.filter(hour__gte=start, hour__lt=end).values_list("hour", "credits")
    )
    hours = []
    hour = start
    while hour < end:
        if hour not in rolled:
            hours.append(hour)
        hour += HOUR
    total = sum(rolled.values())
    ranges = _hour_ranges(hours)
    if ranges:
        within = Q()
        for first, last in ranges:
            within |= Q(hour__gte=first, hour__lt=last)
        live = UsageBucket.objects.filter(within).aggregate(total=Sum("credits"))["total"]
        total += live or 0
    return total


def usage_hours_roll_up(*, now: datetime | None = None) -> int:
    """Write the totals of every closed hour of the last `ROLL_UP_HORIZON` that has none yet
    (one aggregate of that hour's buckets each; an hour without usage gets a row of zeros, so
    it is not read again). Two beats racing write each hour once (the hour is the key)."""
    now = now or clock.now()
    closed_until = (now - SETTLE_GRACE).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = closed_until - ROLL_UP_HORIZON
    done = set(
        UsageHour.objects.filter(hour__gte=first, hour__lt=closed_until).values_list(
            "hour", flat=True
        )
    )
    rows = []
    hour = first
    while hour < closed_until:
        if hour not in done:
            sums = UsageBucket.objects.filter(hour=hour).aggregate(
                requests=Sum("requests"), credits=Sum("credits")
            )
            rows.append(
                UsageHour(hour=hour, requests=sums["requests"] or 0, credits=sums["credits"] or 0)
            )
        hour += HOUR
    UsageHour.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
