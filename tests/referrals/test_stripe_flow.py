"""The payment reward end to end: purchases made through the real Checkout path, paid, refunded
and disputed by Stripe-signed webhook deliveries (tests/payments' helpers and recorded server)."""

from typing import Any

import pytest

from accounts.models import User
from credits.models import CreditAccount
from credits.payments.models import Purchase
from credits.reconciliation import reconcile
from referrals.models import PaymentReward
from tests.factories import registered_user
from tests.payments.conftest import buy, completion_event, deliver, stripe_settings  # noqa: F401
from tests.referrals.conftest import balance, referral_entries, referral_of, register
from tests.stripe_support import build_event, charge, dispute, stripe_server  # noqa: F401

pytestmark = pytest.mark.django_db


def paid(user: User, slug: str = "starter") -> Purchase:
    purchase = buy(user, slug)
    assert deliver(completion_event(purchase)).status_code == 200
    purchase.refresh_from_db()
    return purchase


def refunded_in_full(purchase: Purchase) -> dict[str, Any]:
    return build_event(
        "charge.refunded",
        charge(
            id=purchase.charge_id or f"ch_{str(purchase.pk)[:12]}",
            amount=purchase.price_amount,
            amount_refunded=purchase.price_amount,
            currency=purchase.currency,
            payment_intent=purchase.payment_intent_id,
            metadata={"purchase_id": str(purchase.pk)},
        ),
    )


@pytest.mark.usefixtures("stripe_settings")
def test_a_paid_checkout_rewards_the_inviter_and_its_full_refund_takes_it_back() -> None:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)

    first = paid(bob)
    assert balance(ann) == 100 + 50 + 500
    assert referral_of(bob).paid_purchase == str(first.pk)

    paid(bob, "standard")  # a second payment: no reward
    assert balance(ann) == 650

    assert deliver(refunded_in_full(first)).status_code == 200

    referral = referral_of(bob)
    assert (referral.payment_status, referral.reversal_cause) == (PaymentReward.REVERSED, "refund")
    assert [amount for _, amount, _ in referral_entries(ann)] == [50, 500, -500]
    assert balance(ann) == 150
    assert balance(bob) == 100 + 5000  # the refund took back Bob's Starter credits only
    assert reconcile() == []


@pytest.mark.usefixtures("stripe_settings")
def test_a_dispute_of_the_first_checkout_takes_the_reward_back() -> None:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    first = paid(bob)

    opened = dispute(
        amount=first.price_amount, charge="ch_disputed", payment_intent=first.payment_intent_id
    )
    assert deliver(build_event("charge.dispute.created", opened)).status_code == 200

    assert CreditAccount.objects.get(pk=bob.pk).frozen_at is not None
    referral = referral_of(bob)
    assert (referral.payment_status, referral.reversal_cause) == (PaymentReward.REVERSED, "dispute")
    assert balance(ann) == 150
    assert reconcile() == []
