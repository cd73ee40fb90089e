"""Finance figures by month: a month computed by hand, the command's output and its exit when
the identity is broken below the ORM."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from credits import clock
from credits import services as ledger
from credits.models import CreditSettings
from credits.payments.finance import finance_month
from tests.factories import registered_user
from tests.stripe_support import build_event, dispute

from .conftest import deliver
from .test_handlers import paid, refund_event

pytestmark = pytest.mark.django_db


def move_clock_to(moment: datetime) -> None:
    clock.advance(moment - clock.now())


def spend(user: Any, credits: int) -> None:
    """`credits` charged at once: one hold of that amount committed, as a settle does."""
    request_id = f"spend-{user.pk}-{clock.now().isoformat()}-{credits}"
    ledger.hold_create(user_id=user.pk, request_id=request_id, amount=credits)
    ledger.hold_commit(request_id=request_id)


def stamp() -> int:
    return int(clock.now().timestamp())


def hand_computed_february(stripe_settings: Any) -> None:
    """Alice's Standard lot (5,000 credits, 2,999 cents) is half spent across January and
    February, then expires; Bob's is partially refunded; Carol's Starter is disputed; Dave's
    signup grant is promotional."""
    move_clock_to(datetime(2030, 1, 15, 12, tzinfo=UTC))
    alice = registered_user(email="alice@example.com")
    bob = registered_user(email="bob@example.com")
    settings_row = CreditSettings.load()
    settings_row.signup_credits = 0
    settings_row.save()
    carol = registered_user(email="carol@example.com")
    alice_lot = paid(alice, "standard", created=stamp())  # expires 2030-02-15 12:00
    assert alice_lot.lot is not None and alice_lot.lot.expires_at is not None
    spend(alice, 1000)  # January: floor(2999 * 1000 / 5000) = 599 recognised

    move_clock_to(datetime(2030, 2, 1, 9, tzinfo=UTC))
    spend(alice, 1500)  # half spent: floor(2999 * 2500 / 5000) = 1499, so 900 in February
    bobs = paid(bob, "standard", created=stamp())
    spend(bob, 3)  # floor(2999 * 3 / 5000) = 1
    # A refund of 1,000 cents claws back floor(5000 * 1000 / 2999) = 1,667 credits, releasing
    # floor(2999 * 1670 / 5000) - 1 = 1001 - 1 = 1000.
    assert deliver(refund_event(bobs, 1000)).status_code == 200
    carols = paid(carol, "starter", created=stamp())
    spend(carol, 10)  # floor(499 * 10 / 500) = 9
    opened = dispute(amount=499, payment_intent=carols.payment_intent_id)
    assert deliver(build_event("charge.dispute.created", opened)).status_code == 200  # 490
    settings_row.signup_credits = 100
    settings_row.save()
    dave = registered_user(email="dave@example.com")
    spend(dave, 5)

    move_clock_to(datetime(2030, 2, 20, tzinfo=UTC))
    ledger.account_settle_due(user_id=alice.pk)  # 2,500 credits expire: 2999 - 1499 = 1500


def test_a_month_computed_by_hand(stripe_settings: Any) -> None:
    hand_computed_february(stripe_settings)

    january = finance_month(month="2030-01").currencies["usd"]
    february = finance_month(month="2030-02").currencies["usd"]

    assert (january.cash_in, january.recognized, january.closing_deferred) == (2999, 599, 2400)
    assert january.promotional_granted == 200  # Alice's and Bob's signup grants
    assert vars(february) == {
        "opening_deferred": 2400,
        "cash_in": 2999 + 499,
        "refunds": 1000 + 490,
        "recognized": 900 + 1 + 9,
        "breakage": 1500,
        "closing_deferred": 2999 - 1001,  # Bob's lot: the rest of it is still owed
        "promotional_granted": 100,
        "promotional_consumed": 5,
        "promotional_expired": 0,
    }
    assert finance_month(month="2030-02").broken() == {}


def test_the_command_prints_json_and_csv(stripe_settings: Any) -> None:
    hand_computed_february(stripe_settings)
    out = StringIO()
    call_command("finance_report", "--month", "2030-02", stdout=out)
    body = json.loads(out.getvalue())
    assert body["month"] == "2030-02"
    assert body["currencies"]["usd"]["closing_deferred"] == 1998

    out = StringIO()
    call_command("finance_report", "--month", "2030-02", "--format", "csv", stdout=out)
    header, row = out.getvalue().splitlines()
    assert header.split(",")[:3] == ["month", "currency", "opening_deferred"]
    assert row.startswith("2030-02,usd,2400,3498,1490,910,1500,1998,")


def test_the_command_exits_non_zero_when_the_books_are_tampered_with(
    stripe_settings: Any,
) -> None:
    hand_computed_february(stripe_settings)
    call_command("finance_report", "--month", "2030-02", stdout=StringIO())
    # Below the ORM: a paid amount that no longer matches the price the lot defers.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE credits_purchase SET amount_paid = amount_paid - 100 WHERE price_amount = 499"
        )
    with pytest.raises(CommandError, match="identity does not hold for 2030-02: usd: off by"):
        call_command("finance_report", "--month", "2030-02", stdout=StringIO())


def test_a_malformed_month_is_refused() -> None:
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("finance_report", "--month", "2030-13", stdout=StringIO())


def test_no_activity_is_an_empty_report() -> None:
    assert finance_month(month="2031-03").as_dict() == {"month": "2031-03", "currencies": {}}
    assert timezone.now() < datetime(2031, 3, 1, tzinfo=UTC) + timedelta(days=10**4)


def test_the_admin_shows_the_same_figures_by_month(stripe_settings: Any) -> None:
    from django.test import Client

    from accounts.models import User

    hand_computed_february(stripe_settings)
    staff = User.objects.create_user(email="clerk@example.com", password="pw-clerk-123")
    staff.is_staff = True
    staff.save()
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/payments/financereport/").status_code == 403

    admin = User.objects.create_superuser(email="cfo@example.com", password="pw-cfo-123")
    client.force_login(admin)
    page = client.get("/admin/payments/financereport/")

    assert page.status_code == 200
    rows = page.context["rows"]
    february = next(r for r in rows if (r["month"], r["currency"]) == ("2030-02", "usd"))
    assert february["values"][:6] == [2400, 3498, 1490, 910, 1500, 1998]
    assert february["gap"] == 0
    assert b"broken" not in page.content
