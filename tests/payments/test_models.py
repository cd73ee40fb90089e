"""The database itself refuses what would let a payment be counted twice or granted unpaid."""

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from credits.payments.models import Package, Purchase, StripeEvent
from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def stripe_event(event_id: str) -> StripeEvent:
    return StripeEvent.objects.create(
        event_id=event_id,
        type="charge.refunded",
        created=datetime(2026, 11, 25, tzinfo=UTC),
        payload={},
        received_at=datetime(2026, 11, 25, tzinfo=UTC),
    )


def purchase(**fields: Any) -> Purchase:
    package = Package.objects.get(slug="starter")
    defaults: dict[str, Any] = {
        "user": registered_user(),
        "package": package,
        "credits": 500,
        "price_amount": 499,
        "currency": "usd",
        "created_at": datetime(2026, 11, 25, tzinfo=UTC),
    }
    return Purchase.objects.create(**(defaults | fields))


def test_a_stripe_event_id_is_stored_once_even_below_the_orm() -> None:
    stripe_event("evt_once")

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO credits_stripeevent (event_id, type, livemode, api_version, created,"
            " payload, status, attempts, error, received_at)"
            " VALUES ('evt_once', 'x', false, '', now(), '{}', 'pending', 0, '', now())"
        )


@pytest.mark.parametrize("field", ["payment_intent_id", "charge_id", "checkout_session_id"])
def test_a_stripe_payment_belongs_to_one_purchase_only(field: str) -> None:
    purchase(**{field: "same_stripe_id"})

    with pytest.raises(IntegrityError), transaction.atomic():
        purchase(**{field: "same_stripe_id"})


def test_a_purchase_cannot_hold_a_lot_without_a_payment_time() -> None:
    from credits import services
    from credits.models import LotSource

    bought = purchase()
    entry = services.credits_grant(
        user_id=bought.user_id, amount=500, source=LotSource.PURCHASE, idempotency_key="t:lot"
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        Purchase.objects.filter(pk=bought.pk).update(lot_id=entry.lot_id)


def test_packages_refuse_nonsense_prices_and_currencies() -> None:
    for fields in (
        {"price_amount": 0},
        {"credits": 0},
        {"currency": "USD"},
        {"validity_months": 0},
    ):
        values: dict[str, Any] = {"name": "X", "credits": 1, "price_amount": 1, "currency": "usd"}
        with pytest.raises(IntegrityError), transaction.atomic():
            Package.objects.create(
                slug=f"bad-{len(fields)}-{next(iter(fields))}", **(values | fields)
            )
