"""`receipt_url` on `GET /api/purchases`: Stripe's hosted receipt of the paying charge, recorded
from the charge's events, null until the purchase is paid."""

from typing import Any

import pytest

from credits.payments.models import StripeEvent, StripeEventStatus
from tests.factories import registered_user
from tests.stripe_support import build_event, charge

from .conftest import api_client, buy, completion_event, deliver
from .test_handlers import refund_event

pytestmark = pytest.mark.django_db

RECEIPT = "https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8xUGdh"


def charge_succeeded(purchase: Any, **overrides: Any) -> dict[str, Any]:
    return build_event(
        "charge.succeeded",
        charge(
            amount=purchase.price_amount,
            currency=purchase.currency,
            metadata={"purchase_id": str(purchase.pk)},
            **overrides,
        ),
    )


def receipt_of(user: Any) -> Any:
    (row,) = api_client(user).get("/api/purchases").json()
    return row["receipt_url"]


def test_the_receipt_is_recorded_from_the_charge_and_shown_once_paid(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    event = charge_succeeded(purchase, receipt_url=RECEIPT)

    assert deliver(event).status_code == 200

    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.PROCESSED
    assert receipt_of(user) is None  # the charge is known, the purchase not paid yet
    assert deliver(completion_event(purchase)).status_code == 200
    assert receipt_of(user) == RECEIPT


def test_a_refund_event_records_the_receipt_too(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "starter")
    assert deliver(completion_event(purchase)).status_code == 200
    assert receipt_of(user) is None
    purchase.refresh_from_db()
    event = refund_event(purchase, 100)
    event["data"]["object"]["receipt_url"] = RECEIPT

    assert deliver(event).status_code == 200

    assert receipt_of(user) == RECEIPT


def test_a_receipt_that_is_not_an_https_url_is_not_recorded(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    deliver(completion_event(purchase))

    deliver(charge_succeeded(purchase, receipt_url="javascript:alert(1)"))

    assert receipt_of(user) is None
