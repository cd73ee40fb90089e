"""A year of random purchases, spending, refunds, disputes and expiries (Hypothesis): every month
the finance identity holds to the cent, each month opens where the last one closed, the year's
flows add up to the deferred revenue the lots' own state says is still owed, and a lot whose
credits were all used has recognised exactly its price.

Examples share one test database, so each replays its year in a currency and a year of its own
(the report is per currency and per month: examples cannot see each other)."""

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import User
from credits import clock
from credits import services as ledger
from credits.errors import AccountFrozen, InsufficientCredits
from credits.models import CreditSettings, EntryKind, LedgerEntry, Lot
from credits.payments.finance import finance_month, released
from credits.payments.models import Package, Purchase
from tests.factories import registered_user
from tests.stripe_support import build_event, dispute

from .conftest import buy, completion_event, deliver
from .test_handlers import refund_event

pytestmark = pytest.mark.django_db

_examples = itertools.count()

# Small lots with awkward prices, so floors and remainders are exercised on every lot.
PACKAGES = [(7, 5, 1), (13, 999, 2), (40, 1234, None)]  # credits, price, validity in months

action = st.one_of(
    st.tuples(st.just("buy"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("spend"), st.integers(0, 2), st.integers(1, 25)),
    st.tuples(st.just("refund"), st.integers(0, 30), st.integers(1, 100)),
    st.tuples(st.just("dispute"), st.integers(0, 30), st.just(0)),
)
year_plan = st.lists(st.lists(action, max_size=5), min_size=12, max_size=12)


def _stamp() -> int:
    return int(clock.now().timestamp())


def _spend(user: User, credits: int, tag: str) -> None:
    for n in range(credits):
        request_id = f"{tag}-{n}"
        try:
            ledger.hold_create(user_id=user.pk, request_id=request_id)
        except (InsufficientCredits, AccountFrozen):
            return
        ledger.hold_commit(request_id=request_id)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=year_plan)
def test_a_year_of_random_business_keeps_the_books_exact_every_month(
    stripe_settings: Any, plan: list[list[tuple[str, int, int]]]
) -> None:
    example = next(_examples)
    currency = "x" + "".join(chr(ord("a") + int(d)) for d in f"{example:02d}")
    year = 2040 + example
    settings_row = CreditSettings.load()
    settings_row.signup_credits = 0
    settings_row.save()
    clock.advance(datetime(year, 1, 1, tzinfo=UTC) - clock.now())
    users = [registered_user() for _ in range(3)]
    packages = [
        Package.objects.create(
            slug=f"{currency}-{n}",
            name=f"{currency} {n}",
            credits=credits,
            price_amount=price,
            currency=currency,
            validity_months=validity,
        )
        for n, (credits, price, validity) in enumerate(PACKAGES)
    ]
    purchases: list[Purchase] = []
    for month, actions in enumerate(plan, start=1):
        clock.advance(datetime(year, month, 2, tzinfo=UTC) - clock.now())
        for step, (kind, first, second) in enumerate(actions):
            clock.advance(datetime(year, month, 2 + 2 * step, tzinfo=UTC) - clock.now())
            if kind == "buy":
                try:
                    purchase = buy(users[first], packages[second].slug)
                except AccountFrozen:  # a dispute froze the buyer: no more purchases
                    continue
                deliver(completion_event(purchase, created=_stamp()))
                purchase.refresh_from_db()
                purchases.append(purchase)
            elif kind == "spend":
                _spend(users[first], second, f"{currency}-{month}-{step}")
            elif purchases:
                target = purchases[first % len(purchases)]
                target.refresh_from_db()
                if kind == "refund":
                    amount = max(target.amount_refunded, target.price_amount * second // 100)
                    deliver(refund_event(target, amount))
                elif not target.dispute_id:
                    opened = dispute(
                        amount=target.price_amount, payment_intent=target.payment_intent_id
                    )
                    deliver(build_event("charge.dispute.created", opened))
    clock.advance(datetime(year + 1, 1, 1, tzinfo=UTC) - clock.now())
    for user in users:
        ledger.account_settle_due(user_id=user.pk)

    months = [f"{year}-{m:02d}" for m in range(1, 13)] + [f"{year + 1}-01"]
    reports = [finance_month(month=m).currencies.get(currency) for m in months]
    opening = 0
    totals = {"cash_in": 0, "refunds": 0, "recognized": 0, "breakage": 0}
    for report in reports:
        if report is None:
            assert opening == 0
            continue
        assert report.identity_gap() == 0
        assert report.opening_deferred == opening
        opening = report.closing_deferred
        for name in totals:
            totals[name] += getattr(report, name)

    # What the lots themselves (their reconciled cache) say is still owed.
    lots: dict[int, Purchase] = {
        p.lot_id: p
        for p in Purchase.objects.filter(currency=currency, lot__isnull=False)
        if p.lot_id is not None
    }
    owed = 0
    for lot in Lot.objects.filter(pk__in=lots):
        price = lots[lot.pk].price_amount
        owed += price - released(price, lot.granted - lot.remaining, lot.granted)
    assert opening == owed
    assert totals["cash_in"] == sum(p.price_amount for p in lots.values())
    assert totals["cash_in"] - totals["refunds"] - totals["recognized"] - totals["breakage"] == owed
    # A lot whose every credit was charged recognised exactly its price: the total recognised
    # is at least the sum of those prices, and lots used only by charges account for all of it.
    for lot_id, purchase in lots.items():
        kinds = set(LedgerEntry.objects.filter(lot_id=lot_id).values_list("kind", flat=True))
        lot = Lot.objects.get(pk=lot_id)
        if lot.remaining == 0 and kinds == {EntryKind.GRANT, EntryKind.CHARGE}:
            steps = [
                released(purchase.price_amount, used, lot.granted)
                for used in range(lot.granted + 1)
            ]
            assert steps[-1] == purchase.price_amount
    clock.reset()
