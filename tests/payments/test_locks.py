"""The purchase lock of the Stripe handlers locks the purchase row only: the package it reads
stays free for staff editing it (and for every other purchase of it), and the purchase is
locked FOR NO KEY UPDATE, so a Stripe event row that references it can still be inserted."""

import threading
from typing import Any, cast

import pytest
from django.db import OperationalError, connection, transaction

from accounts.models import User
from credits import clock
from credits.payments.handlers import _locked_purchase
from credits.payments.models import Package, Purchase
from tests.factories import UserFactory, ensure_seeded_packages


def _try_from_another_connection(sql: str, params: list[Any]) -> str:
    """Run `sql` on a new connection without waiting for locks: 'ok' or 'locked'."""
    result: list[str] = []

    def run() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
                cursor.execute(sql, params)
                transaction.set_rollback(True)
            result.append("ok")
        except OperationalError:
            result.append("locked")
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    return result[0]


@pytest.mark.django_db(transaction=True)
def test_the_purchase_lock_leaves_the_package_row_free() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    ensure_seeded_packages()
    package = Package.objects.get(slug="standard")
    purchase = Purchase.objects.create(
        user=cast(User, UserFactory()),
        package=package,
        credits=package.credits,
        price_amount=package.price_amount,
        currency=package.currency,
        created_at=clock.now(),
    )
    with transaction.atomic():
        locked = _locked_purchase(purchase_id=purchase.pk)
        assert locked is not None and locked.package.slug == "standard"
        # The purchase is locked (so the checks below are not vacuous)...
        assert (
            _try_from_another_connection(
                "SELECT id FROM credits_purchase WHERE id = %s FOR UPDATE", [purchase.pk]
            )
            == "locked"
        )
        # ...the package it read is not...
        assert (
            _try_from_another_connection(
                "SELECT id FROM credits_package WHERE id = %s FOR UPDATE", [package.pk]
            )
            == "ok"
        )
        # ...and a row referencing the purchase can be written meanwhile (FOR KEY SHARE).
        assert (
            _try_from_another_connection(
                "SELECT id FROM credits_purchase WHERE id = %s FOR KEY SHARE", [purchase.pk]
            )
            == "ok"
        )
