"""Reads of the usage report and the ledger history. They write nothing.

The usage figures come from the hourly buckets (`UsageBucket`, kept by a database trigger on
every settle), so a report costs in proportion to the hours it covers, never to the number of
requests behind them. Everything else comes from the ledger: `credits.services` for the balance
and the spendable lots, `CreditAccount.consumed` for the all-time total.

Windows are half-open, `[start, end)`, in UTC, and exact. The hours wholly inside a window come
from the buckets. A bound inside an hour (not a whole hour, as a date always is) cuts that hour:
the part of it inside the window is summed from the usage records instead, with the trigger's
rules, over the index on (account, settled_at). There are at most two such hours, each less than
an hour of one account's records, and whole-hour bounds read no record at all.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar
from uuid import UUID

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate

from accounts.models import ApiKey, User
from config.errors import NotFound
from credits import clock, services
from credits.gateway.models import UsageBucket, UsageRecord
from credits.gateway.ratelimit import TierLimits, tier_for_balance
from credits.models import CreditAccount, Hold, LedgerEntry, Lot

HOUR = timedelta(hours=1)
# The last hour a datetime can hold: nothing comes after it, so it has no end to compute.
LAST_HOUR = datetime.max.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
DEFAULT_DAYS = 30
DEFAULT_HOURS = 48


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval; a missing bound is unbounded."""

    start: datetime | None
    end: datetime | None


@dataclass
class UsageTotals:
    requests: int = 0
    credits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "UsageTotals") -> None:
        self.requests += other.requests
        self.credits += other.credits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "credits": self.credits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class CreditsReport:
    credits_remaining: int
    credits_reserved: int
    total_credits_consumed: int
    tier: TierLimits | None
    lots: list[Lot]
    usage_by_day: list[tuple[date, UsageTotals]] = field(default_factory=list)
    usage_by_hour: list[tuple[datetime, UsageTotals]] = field(default_factory=list)
    average_tokens_per_request: float | None = None


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def cut_hour(bound: datetime | None) -> datetime | None:
    """The hour a bound falls inside of, or None for a whole-hour (or missing) bound."""
    if bound is None:
        return None
    hour = hour_floor(bound)
    return hour if hour != bound else None


def default_windows(now: datetime) -> tuple[Window, Window]:
    """(days, hours) without parameters: the last 30 UTC days including today, and the last
    48 hours including the current one."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = Window(today - timedelta(days=DEFAULT_DAYS - 1), today + timedelta(days=1))
    this_hour = hour_floor(now)
    hours = Window(this_hour - (DEFAULT_HOURS - 1) * HOUR, this_hour + HOUR)
    return days, hours


def api_key_of_user(*, user: User, key_id: str) -> ApiKey:
    """The user's own key with this id, live or not (its history still counts); another user's
    key and an unknown id are the same 404, so nothing about other users' keys leaks."""
    try:
        parsed = UUID(key_id)
    except ValueError as exc:
        raise NotFound("No API key of yours has this id.", code="key_not_found", field="key") from (
            exc
        )
    key = ApiKey.objects.filter(pk=parsed, user=user).first()
    if key is None:
        raise NotFound("No API key of yours has this id.", code="key_not_found", field="key")
    return key


def _buckets(*, account_id: Any, window: Window, api_key_id: Any | None) -> QuerySet[UsageBucket]:
    """The buckets of the hours wholly inside the window (an hour a bound cuts is left out)."""
    buckets = UsageBucket.objects.filter(account_id=account_id)
    if window.start is not None:
        # The hour starts inside the window: for a start inside an hour, the next one on.
        buckets = buckets.filter(hour__gte=window.start)
    if window.end is not None:
        # hour + 1h <= end, i.e. hour < floor(end): the same as hour < end for a whole hour.
        buckets = buckets.filter(hour__lt=hour_floor(window.end))
    if api_key_id is not None:
        buckets = buckets.filter(api_key_id=api_key_id)
    return buckets


_SUMS = {
    "n_requests": Sum("requests"),
    "n_credits": Sum("credits"),
    "n_prompt": Sum("prompt_tokens"),
    "n_completion": Sum("completion_tokens"),
}
_COLUMNS = ("n_requests", "n_credits", "n_prompt", "n_completion")


def cut_parts(window: Window) -> list[tuple[datetime, Window]]:
    """The hours that a bound of the window falls inside of, each with the part of it inside
    the window: at most two, one when both bounds fall inside the same hour."""
    start_hour, end_hour = cut_hour(window.start), cut_hour(window.end)
    if start_hour is not None and start_hour == end_hour:
        return [(start_hour, window)]
    parts = []
    if start_hour is not None:
        # From `start` to the end of its hour (`end`, if any, is at or after it).
        end_of_hour = start_hour + HOUR if start_hour < LAST_HOUR else None
        parts.append((start_hour, Window(window.start, end_of_hour)))
    if end_hour is not None:
        # From the start of its hour (`start`, if any, is at or before it) to `end`.
        parts.append((end_hour, Window(end_hour, window.end)))
    return parts


def usage_of_cut_hours(
    *, account_id: Any, window: Window, api_key_id: Any | None = None
) -> list[tuple[datetime, UsageTotals]]:
    """The usage in the part of the cut hours (`cut_parts`) inside the window, which the
    buckets leave out: summed from the usage records by the trigger's rules (migration
    0005_usage_buckets), one aggregate per cut hour over less than an hour of one account's
    records (the `usage_account_settled_id` index). Whole-hour bounds cut no hour: no query."""
    charged = Q(charged__gt=0)
    rows = []
    for hour, part in cut_parts(window):
        records = UsageRecord.objects.filter(account_id=account_id, settled_at__gte=part.start)
        if part.end is not None:
            records = records.filter(settled_at__lt=part.end)
        if api_key_id is not None:
            records = records.filter(api_key_id=api_key_id)
        sums = records.aggregate(
            requests=Count("pk"),
            credits=Sum("charged"),
            prompt_tokens=Sum("prompt_tokens", filter=charged),
            completion_tokens=Sum("completion_tokens", filter=charged),
        )
        if sums["requests"] == 0:
            continue  # left out, as an hour without a bucket is
        totals = UsageTotals(
            requests=sums["requests"],
            credits=sums["credits"],
            # NULL when none of the part's records was charged.
            prompt_tokens=sums["prompt_tokens"] or 0,
            completion_tokens=sums["completion_tokens"] or 0,
        )
        rows.append((hour, totals))
    return rows


Period = TypeVar("Period", bound=date)  # a day, or an hour (a datetime)


def _added_up(
    rows: list[tuple[Period, UsageTotals]], more: list[tuple[Period, UsageTotals]]
) -> list[tuple[Period, UsageTotals]]:
    """`rows` (one per period) with `more` added in, ascending."""
    if not more:
        return rows
    by_period = dict(rows)
    for period, totals in more:
        by_period.setdefault(period, UsageTotals()).add(totals)
    return sorted(by_period.items(), key=lambda row: row[0])


def usage_hourly(
    *,
    account_id: Any,
    window: Window,
    api_key_id: Any | None = None,
    cut_hours: list[tuple[datetime, UsageTotals]] | None = None,
) -> list[tuple[datetime, UsageTotals]]:
    """One row per UTC hour with usage in the window (keys and models added up), ascending:
    the whole hours from the buckets, and `cut_hours` (from `usage_of_cut_hours`) added in."""
    rows = hourly_query(account_id=account_id, window=window, api_key_id=api_key_id)
    hours = [(hour.astimezone(UTC), UsageTotals(*totals)) for hour, *totals in rows]
    return _added_up(hours, cut_hours or [])


def hourly_query(*, account_id: Any, window: Window, api_key_id: Any | None = None) -> QuerySet:
    return (
        _buckets(account_id=account_id, window=window, api_key_id=api_key_id)
        .values("hour")
        .annotate(**_SUMS)
        .order_by("hour")
        .values_list("hour", *_COLUMNS)
    )


def usage_daily(
    *,
    account_id: Any,
    window: Window,
    api_key_id: Any | None = None,
    cut_hours: list[tuple[datetime, UsageTotals]] | None = None,
) -> list[tuple[date, UsageTotals]]:
    """One row per UTC day with usage in the window, ascending, `cut_hours` added to their
    days. Summed in the database: the default 30 days return 30 rows however many keys, models
    and hours lie behind them."""
    rows = daily_query(account_id=account_id, window=window, api_key_id=api_key_id)
    days = [(day, UsageTotals(*totals)) for day, *totals in rows]
    return _added_up(days, [(hour.date(), totals) for hour, totals in cut_hours or []])


def daily_query(*, account_id: Any, window: Window, api_key_id: Any | None = None) -> QuerySet:
    return (
        _buckets(account_id=account_id, window=window, api_key_id=api_key_id)
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values("day")
        .annotate(**_SUMS)
        .order_by("day")
        .values_list("day", *_COLUMNS)
    )


def average_tokens(totals: UsageTotals) -> float | None:
    """(prompt + completion tokens of charged requests) / charged requests, one decimal,
    halves rounded up (exact decimal arithmetic: 0.25 is 0.3, not float rounding's 0.2)."""
    if totals.credits == 0:
        return None
    tokens = Decimal(totals.prompt_tokens + totals.completion_tokens)
    return float((tokens / totals.credits).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def credits_report(
    *,
    user: User,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: str | None = None,
    now: datetime | None = None,
) -> CreditsReport:
    """Everything `GET /api/user/credits` shows. `start`/`end`/`key_id` narrow the usage
    series and the average only; the balance, tier, lots and total are account-wide."""
    now = now or clock.now()
    api_key_id = api_key_of_user(user=user, key_id=key_id).pk if key_id is not None else None
    account = CreditAccount.objects.filter(pk=user.pk).first()
    if account is None:  # a user made outside registration (createsuperuser): nothing yet
        return CreditsReport(0, 0, 0, None, [])
    balance = services.account_balance(account=account, now=now)
    report = CreditsReport(
        credits_remaining=balance.available,
        credits_reserved=balance.reserved,
        total_credits_consumed=account.consumed,
        # The gateway's own (briefly cached) lookup: the dashboard names the tier that
        # authorize applies, and the tiers cost no query on most calls.
        tier=tier_for_balance(balance.balance),
        lots=services.lots_spendable(account=account, now=now),
    )
    if start is None and end is None:
        day_window, hour_window = default_windows(now)
    else:
        day_window = hour_window = Window(start, end)
    # Read once for both series. The default windows are whole hours and cut none.
    cut_hours = usage_of_cut_hours(
        account_id=account.pk, window=Window(start, end), api_key_id=api_key_id
    )
    report.usage_by_day = usage_daily(
        account_id=account.pk, window=day_window, api_key_id=api_key_id, cut_hours=cut_hours
    )
    report.usage_by_hour = usage_hourly(
        account_id=account.pk, window=hour_window, api_key_id=api_key_id, cut_hours=cut_hours
    )
    # The average covers the days' window (the filtered one, or the default 30 days).
    total = UsageTotals()
    for _, totals in report.usage_by_day:
        total.add(totals)
    report.average_tokens_per_request = average_tokens(total)
    return report


def ledger_entries(
    *, user: User, kind: str | None = None, before_id: int | None = None, limit: int = 50
) -> list[LedgerEntry]:
    """The user's ledger entries, newest first: at most `limit`, older than `before_id`. The
    ids come from the index alone (`services.entry_ids_newest`), then their rows by primary
    key: a page costs the same for the quietest account as for the busiest, first or deep."""
    ids = services.entry_ids_newest(account_id=user.pk, kind=kind, before_id=before_id, limit=limit)
    return list(
        LedgerEntry.objects.filter(id__in=ids)
        .select_related("lot")
        .only(
            "id",
            "kind",
            "amount",
            "balance_after",
            "reference",
            "reason",
            "created_at",
            "lot__source",
        )
        .order_by("-id")[:limit]
    )


# The columns of one settled request, in the order of the contract (the list and the CSV).
REQUEST_FIELDS = (
    "request_id",
    "key_id",
    "model",
    "outcome",
    "http_status",
    "charged",
    "reason",
    "prompt_tokens",
    "completion_tokens",
    "authorized_at",
    "settled_at",
)


def usage_records(
    *,
    user: User,
    window: Window,
    key_id: str | None = None,
    before: tuple[datetime, int] | None = None,
) -> "QuerySet[UsageRecord, dict[str, Any]]":
    """The user's settled requests in `window`, newest first (settled_at, then id), older than
    the position `before`. Served by the index (account, settled_at, id): the account and the
    bounds are the index's range, `settled_at <= before` its upper end, so a page deep in the
    history costs what the first one does. `authorized_at` is the hold's creation (one lookup
    by the hold's unique request id). Lazy: the CSV iterates it with a server-side cursor."""
    records = UsageRecord.objects.filter(account_id=user.pk)
    if key_id is not None:
        records = records.filter(api_key=api_key_of_user(user=user, key_id=key_id))
    if window.start is not None:
        records = records.filter(settled_at__gte=window.start)
    if window.end is not None:
        records = records.filter(settled_at__lt=window.end)
    if before is not None:
        at, record_id = before
        records = records.filter(settled_at__lte=at).exclude(settled_at=at, id__gte=record_id)
    authorized = Hold.objects.filter(request_id=OuterRef("request_id")).values("created_at")[:1]
    return (
        records.annotate(key_id=F("api_key_id"), authorized_at=Subquery(authorized))
        .order_by("-settled_at", "-id")
        .values("id", *REQUEST_FIELDS)
    )


def ledger_entries_in(
    *, user: User, window: Window, kind: str | None = None
) -> "QuerySet[LedgerEntry, tuple[Any, ...]]":
    """The user's ledger entries in `window` (by `created_at`), newest first, lazily (the CSV)."""
    entries = LedgerEntry.objects.filter(account_id=user.pk)
    if kind is not None:
        entries = entries.filter(kind=kind)
    if window.start is not None:
        entries = entries.filter(created_at__gte=window.start)
    if window.end is not None:
        entries = entries.filter(created_at__lt=window.end)
    return entries.order_by("-id").values_list(
        "id", "kind", "amount", "balance_after", "lot__source", "reference", "reason", "created_at"
    )
