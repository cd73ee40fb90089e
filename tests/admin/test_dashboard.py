"""The admin index shows today's (UTC) credits sold, consumed and expired: sold and expired from
two cheap aggregates of the ledger's rare kinds, consumed from the day's usage buckets (never
the day's charge entries: issue 23)."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from credits import clock, services
from credits.gateway.models import UsageRecord
from credits.models import LotSource
from credits.usage.dashboard import DayTotals, day_totals
from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def at(text: str) -> datetime:
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    clock.reset()
    clock.advance(moment - timezone.now())
    return moment


def grant(user: User, amount: int, source: str, key: str, expires: str | None = None) -> None:
    services.credits_grant(
        user_id=user.pk,
        amount=amount,
        source=source,
        idempotency_key=key,
        expires_at=datetime.fromisoformat(expires).replace(tzinfo=UTC) if expires else None,
    )


def charge(user: User, request_id: str) -> None:
    """A request authorized and charged as the gateway's settle writes it: the charge and its
    usage record in one transaction (the record's trigger adds it to its hourly bucket)."""
    services.hold_create(user_id=user.pk, request_id=request_id)
    with transaction.atomic():
        result = services.hold_commit(request_id=request_id)
        UsageRecord.objects.create(
            request_id=request_id,
            account_id=user.pk,
            model="kimi-k2-0905",
            outcome="success",
            http_status=200,
            charged=result.hold.charged,
            settled_at=result.hold.settled_at or clock.now(),
        )


@pytest.fixture
def busy_day() -> None:
    """Yesterday (Nov 20): a signup, a 500-credit purchase expiring today at 08:00, one charge.
    Today (Nov 21): a 5,000-credit purchase, a staff adjustment and a referral reward (neither
    sold), three charges, and the 499 unspent credits of yesterday's lot expire."""
    at("2026-11-20T10:00:00")
    alice = registered_user(email="alice@example.com")
    grant(alice, 500, LotSource.PURCHASE, "buy-1", expires="2026-11-21T08:00:00")
    charge(alice, "r0")  # from the purchase lot: it expires first
    at("2026-11-20T23:59:59")
    grant(alice, 20, LotSource.PURCHASE, "buy-late-yesterday")

    at("2026-11-21T00:00:00")
    grant(alice, 5000, LotSource.PURCHASE, "buy-2")
    at("2026-11-21T09:00:00")
    grant(alice, 50, LotSource.REFERRAL, "referral-1")  # writes the 08:00 expiry first
    services.credits_adjust(user_id=alice.pk, amount=7, reason="goodwill", idempotency_key="adj")
    for n in range(3):
        charge(alice, f"r{n + 1}")
    at("2026-11-21T12:00:00")


def test_the_day_totals_count_purchases_charges_and_expiries_of_the_utc_day(
    busy_day: None,
) -> None:
    assert day_totals() == DayTotals(day="2026-11-21", sold=5000, consumed=3, expired=499)


def test_yesterdays_figures_are_yesterdays(busy_day: None) -> None:
    yesterday = datetime(2026, 11, 20, 18, tzinfo=UTC)
    assert day_totals(now=yesterday) == DayTotals(day="2026-11-20", sold=520, consumed=1, expired=0)


def test_the_index_page_shows_todays_figures_with_two_ledger_queries_and_one_of_buckets(
    busy_day: None, root: Client
) -> None:
    with CaptureQueriesContext(connection) as captured:
        response = root.get("/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Today (2026-11-21, UTC)" in html
    assert '<strong id="credits-sold">5,000</strong>' in html
    assert '<strong id="credits-consumed">3</strong>' in html
    assert '<strong id="credits-expired">499</strong>' in html
    ledger_queries = [q for q in captured if "credits_ledgerentry" in q["sql"]]
    assert len(ledger_queries) == 2
    assert all("SUM(" in q["sql"] for q in ledger_queries)
    # The day's charges (a hundred million on a busy day) are never read: their buckets are.
    assert not any("'charge'" in q["sql"] for q in ledger_queries)
    bucket_queries = [q for q in captured if "credits_usagebucket" in q["sql"]]
    assert len(bucket_queries) == 1
    assert "SUM(" in bucket_queries[0]["sql"]


def test_staff_without_ledger_access_do_not_see_the_figures(
    busy_day: None, staff: Callable[..., Client]
) -> None:
    html = staff("accounts.view_user").get("/admin/").content.decode()
    assert "credits-sold" not in html
    assert "credits-sold" in staff("credits.view_ledgerentry").get("/admin/").content.decode()
