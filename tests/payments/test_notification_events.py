"""The payment events of the outbox (issue 17): `payment.succeeded`, `payment.refunded` (refund or
dispute claw-back) and `account.frozen` (dispute), each written in the transaction of the Stripe
event that caused it, once, also when Stripe delivers the event twice; none when the handler's
transaction rolls back."""

from typing import Any

import pytest

from config.fields import rfc3339
from credits.models import Event
from credits.payments.models import StripeEvent, StripeEventStatus
from credits.payments.signals import purchase_paid
from tests.factories import registered_user
from tests.stripe_support import build_event, dispute

from .conftest import buy, completion_event, deliver
from .test_handlers import paid, refund_event, spend

pytestmark = pytest.mark.django_db


def payment_events(user_id: Any) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.type, e.data)
        for e in Event.objects.filter(user_id=user_id)
        .exclude(type__startswith="key.")
        .exclude(type__startswith="credits.")
        .order_by("created_at", "cause")
    ]


def test_a_paid_checkout_delivered_twice_writes_one_payment_succeeded(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    # Stripe redelivers the same event id, and may send a second event about the same payment.
    again = completion_event(purchase)
    deliver(again)
    deliver(again)
    purchase.refresh_from_db()
    assert purchase.lot is not None and purchase.lot.expires_at is not None
    assert payment_events(user.pk) == [
        (
            "payment.succeeded",
            {
                "purchase_id": str(purchase.pk),
                "package": "standard",
                "credits": 5000,
                "amount": 2999,
                "currency": purchase.currency,
                "expires_at": payment_events(user.pk)[0][1]["expires_at"],
            },
        )
    ]
    assert payment_events(user.pk)[0][1]["expires_at"] == rfc3339(purchase.lot.expires_at)


def test_each_refund_amount_writes_one_payment_refunded_however_often_delivered(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")  # 5,000 credits for 2,999 cents
    partial = refund_event(purchase, 1000)
    deliver(partial)
    deliver(partial)
    deliver(refund_event(purchase, 2999))
    deliver(refund_event(purchase, 2999))
    refunds = [data for type, data in payment_events(user.pk) if type == "payment.refunded"]
    assert refunds == [
        {"purchase_id": str(purchase.pk), "amount_refunded": 1000, "credits_clawed_back": 1667},
        {"purchase_id": str(purchase.pk), "amount_refunded": 2999, "credits_clawed_back": 5000},
    ]


def test_a_dispute_delivered_twice_freezes_once_and_claws_back_once(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    spend(user, 3)
    opened = build_event(
        "charge.dispute.created",
        dispute(amount=2999, charge="ch_disputed", payment_intent=purchase.payment_intent_id),
    )
    deliver(opened)
    deliver(opened)
    found = payment_events(user.pk)
    assert [type for type, _ in found] == [
        "payment.succeeded",
        "account.frozen",
        "payment.refunded",
    ]
    purchase.refresh_from_db()
    assert found[1][1] == {
        "reason": f"Payment disputed ({purchase.dispute_id}, purchase {purchase.pk})."
    }
    assert found[2][1] == {
        "purchase_id": str(purchase.pk),
        "amount_refunded": 0,
        "credits_clawed_back": 5000 - 3,
    }


def test_a_handler_that_fails_after_the_grant_leaves_no_event(stripe_settings: Any) -> None:
    """The grant and its event roll back together when the handler fails after both were
    written (here a receiver of `purchase_paid`, which runs after them, raises)."""
    user = registered_user()
    purchase = buy(user, "standard")

    def fail(sender: object, **kwargs: Any) -> None:
        raise RuntimeError("a receiver fails after the grant")

    purchase_paid.connect(fail, dispatch_uid="test-fail-after-grant")
    try:
        event = completion_event(purchase)
        deliver(event)
    finally:
        purchase_paid.disconnect(dispatch_uid="test-fail-after-grant")
    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.FAILED
    purchase.refresh_from_db()
    assert purchase.lot_id is None
    assert payment_events(user.pk) == []

    deliver(event)  # delivered again once the fault is gone: granted, announced once
    assert [type for type, _ in payment_events(user.pk)] == ["payment.succeeded"]
