"""Finance: deferred revenue, recognised revenue and breakage per month, derived from the ledger.

Nothing here is recorded: every figure is derived exactly from the ledger entries (append-only,
so a closed month never changes) and the purchases' price snapshots, so the hot path's SQL writes
no extra row for finance. The rule (CONTRACT part 2, "Finance and staff operations"): a paid lot
of `N` credits bought for `P` minor units has released `V(u) = floor(P * u / N)` of its price
once `u` of its credits have left it, whichever way they left. Each entry that takes credits out
of the lot releases `V(u_after) - V(u_before)`, counted by the entry's kind:

- `charge`: recognised revenue (the credit was used);
- `expire`, and a negative `adjust` (credits forfeited, e.g. an account's deletion): breakage;
- `clawback` (a refund or dispute): `refunds`, the deferred revenue the refund reverses.

So a lot recognises exactly its price once all its credits are used (the last credit releases
the remainder), and the deferred revenue of a lot is `P - V(u)`, never negative. Cash in is the
purchase's `amount_paid`, counted in the month of its grant entry (the moment the ledger owes the
credits). The identity `opening + cash_in - refunds - recognized - breakage = closing` is then
checked against an independent computation of both deferred balances (an aggregate per lot, not
the walk that produced the flows, and with the price rather than the amount paid): a purchase
whose paid amount disagrees with its price, or ledger rows the walk does not see the way the
aggregate does, break it, and `finance_report` exits non-zero.

Promotional lots (signup, referral, adjustment) carry no money: they are reported in credits
(granted, consumed, expired in the month).

Known limit (written down, not hidden): a refund of credits already spent (Stripe refunds money
the lot had recognised: `Lot.clawback_uncollectable`) reverses deferred revenue only by the
credits clawed back; the rest of the cash returned is not reported as a revenue reversal here.
"""

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.db.models import Max, Min, Q, Sum

from credits.models import EntryKind, LedgerEntry, LotSource

from .models import Purchase

MONEY_FIELDS = (
    "opening_deferred",
    "cash_in",
    "refunds",
    "recognized",
    "breakage",
    "closing_deferred",
)
CREDIT_FIELDS = ("promotional_granted", "promotional_consumed", "promotional_expired")


@dataclass
class CurrencyFigures:
    opening_deferred: int = 0
    cash_in: int = 0
    refunds: int = 0
    recognized: int = 0
    breakage: int = 0
    closing_deferred: int = 0
    promotional_granted: int = 0
    promotional_consumed: int = 0
    promotional_expired: int = 0

    def identity_gap(self) -> int:
        """Zero when the books balance."""
        return (
            self.opening_deferred
            + self.cash_in
            - self.refunds
            - self.recognized
            - self.breakage
            - self.closing_deferred
        )


@dataclass
class MonthReport:
    month: str
    currencies: dict[str, CurrencyFigures] = field(default_factory=dict)

    def broken(self) -> dict[str, int]:
        """The currencies whose identity does not hold, with the gap in minor units."""
        return {
            currency: figures.identity_gap()
            for currency, figures in self.currencies.items()
            if figures.identity_gap() != 0
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "currencies": {c: asdict(f) for c, f in sorted(self.currencies.items())},
        }


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """`YYYY-MM` → its first instant and the next month's first instant, UTC."""
    first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    year, index = divmod(first.month, 12)
    return first, first.replace(year=first.year + year, month=index + 1)


def released(price: int, used: int, granted: int) -> int:
    """The contract's rule: the part of a lot's price released once `used` of its `granted`
    credits have left it (Python integers: exact whatever the size)."""
    return price * used // granted


# What leaves a lot, and which figure its released price counts towards.
_FLOW_OF_KIND = {
    EntryKind.CHARGE: "recognized",
    EntryKind.EXPIRE: "breakage",
    EntryKind.ADJUST: "breakage",
    EntryKind.CLAWBACK: "refunds",
}


@dataclass(frozen=True)
class _PaidLot:
    price: int
    granted: int
    currency: str
    amount_paid: int


def _paid_lots() -> dict[int, _PaidLot]:
    rows = Purchase.objects.filter(lot__isnull=False).values_list(
        "lot_id", "price_amount", "lot__granted", "currency", "amount_paid"
    )
    return {
        lot_id: _PaidLot(price, granted, currency, amount_paid or 0)
        for lot_id, price, granted, currency, amount_paid in rows
    }


def _used_before(moment: datetime) -> dict[int, int]:
    """Credits that had left each purchase lot before `moment` (one aggregate per lot)."""
    rows = (
        LedgerEntry.objects.filter(lot__source=LotSource.PURCHASE, created_at__lt=moment)
        .exclude(kind=EntryKind.GRANT)
        .values("lot_id")
        .annotate(out=Sum("amount"))
        .values_list("lot_id", "out")
    )
    return {lot_id: -out for lot_id, out in rows}


def _granted_before(moment: datetime) -> set[int]:
    return set(
        LedgerEntry.objects.filter(
            lot__source=LotSource.PURCHASE, kind=EntryKind.GRANT, created_at__lt=moment
        ).values_list("lot_id", flat=True)
    )


def _deferred_at(moment: datetime, lots: dict[int, _PaidLot]) -> dict[str, int]:
    """Deferred revenue per currency at `moment`: each granted purchase lot's price less what
    its used credits released."""
    used = _used_before(moment)
    deferred: dict[str, int] = defaultdict(int)
    for lot_id in _granted_before(moment):
        lot = lots[lot_id]
        deferred[lot.currency] += lot.price - released(lot.price, used.get(lot_id, 0), lot.granted)
    return deferred


def finance_month(*, month: str) -> MonthReport:
    """The month's figures per currency (see the module's docstring)."""
    start, end = month_bounds(month)
    lots = _paid_lots()
    report = MonthReport(month=month)

    def figures(currency: str) -> CurrencyFigures:
        return report.currencies.setdefault(currency, CurrencyFigures())

    for currency, amount in _deferred_at(start, lots).items():
        figures(currency).opening_deferred = amount
    for currency, amount in _deferred_at(end, lots).items():
        figures(currency).closing_deferred = amount

    # The month's entries of purchase lots, walked in order from each lot's use at the start.
    used = _used_before(start)
    entries = (
        LedgerEntry.objects.filter(
            lot__source=LotSource.PURCHASE, created_at__gte=start, created_at__lt=end
        )
        .order_by("lot_id", "id")
        .values_list("lot_id", "kind", "amount")
    )
    for lot_id, kind, amount in entries.iterator(chunk_size=5000):
        lot = lots[lot_id]
        row = figures(lot.currency)
        if kind == EntryKind.GRANT:
            row.cash_in += lot.amount_paid
            continue
        before = used.get(lot_id, 0)
        used[lot_id] = before - amount
        delta = released(lot.price, before - amount, lot.granted) - released(
            lot.price, before, lot.granted
        )
        attribute = _FLOW_OF_KIND[EntryKind(kind)]
        setattr(row, attribute, getattr(row, attribute) + delta)

    # Promotional credits: no money, counted in credits under the currency-free key "credits".
    promotional = (
        LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)
        .exclude(lot__source=LotSource.PURCHASE)
        .aggregate(
            granted=Sum("amount", filter=Q(kind=EntryKind.GRANT)),
            consumed=Sum("amount", filter=Q(kind=EntryKind.CHARGE)),
            expired=Sum("amount", filter=Q(kind=EntryKind.EXPIRE)),
        )
    )
    if any(value for value in promotional.values()):
        for row in report.currencies.values() or [figures("usd")]:
            row.promotional_granted = promotional["granted"] or 0
            row.promotional_consumed = -(promotional["consumed"] or 0)
            row.promotional_expired = -(promotional["expired"] or 0)
    return report


def months_with_activity() -> list[str]:
    """Every month from the first ledger entry to the latest one, newest first."""
    bounds = LedgerEntry.objects.aggregate(first=Min("created_at"), last=Max("created_at"))
    first, last = bounds["first"], bounds["last"]
    if first is None or last is None:
        return []
    months = []
    cursor = date(first.year, first.month, 1)
    while cursor <= date(last.year, last.month, 1):
        months.append(cursor.strftime("%Y-%m"))
        year, index = divmod(cursor.month, 12)
        cursor = cursor.replace(year=cursor.year + year, month=index + 1)
    return months[::-1]
