"""Real races on real PostgreSQL: threads released together by a barrier, each with its own
database connection (closed at the thread's end), on committed data (transaction=True)."""

from collections import Counter
from datetime import datetime, time

import pytest
from django.db import transaction

from accounts.models import User
from credits import clock
from credits import services as credits_services
from credits.models import LotSource
from credits.payments.models import Purchase
from credits.payments.signals import purchase_paid
from credits.reconciliation import reconcile
from referrals.models import PaymentReward, Referral, RegistrationReward
from tests.concurrency import run_together
from tests.factories import registered_user
from tests.referrals.conftest import (
    balance,
    pay,
    program,
    purchase_of,
    referral_entries,
    referral_of,
    register,
)

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20  # each holds a connection (tests/concurrency.py checks they are free)


def test_concurrent_first_payments_of_one_invitee_grant_one_reward() -> None:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    purchases = [purchase_of(bob) for _ in range(THREADS)]

    results = run_together(THREADS, lambda i: pay(purchases[i]))

    assert results == [None] * THREADS
    referral = referral_of(bob)
    assert referral.payment_status == PaymentReward.GRANTED
    # The purchase recorded as the first is one of those that raced, and it alone can take
    # the reward back.
    assert referral.paid_purchase in {str(p.pk) for p in purchases}
    assert [amount for _, amount, _ in referral_entries(ann)] == [50, 500]
    assert balance(ann) == 650
    assert reconcile() == []


def test_the_same_first_payment_delivered_concurrently_grants_one_reward() -> None:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    purchase = purchase_of(bob)

    results = run_together(2, lambda i: pay(purchase))

    assert results == [None, None]
    assert referral_of(bob).paid_purchase == str(purchase.pk)
    assert balance(ann) == 650


def test_concurrent_registrations_racing_the_daily_cap_grant_exactly_the_cap() -> None:
    now = clock.now()
    clock.advance(datetime.combine(now.date(), time(12), tzinfo=now.tzinfo) - now)
    program(max_registration_rewards_per_day=5)
    ann = registered_user(email="ann@example.com")

    def register_friend(i: int) -> User:
        # Alternate the code's case: matching must not depend on it, even under load.
        code = ann.invite_code if i % 2 else ann.invite_code.lower()
        return register(f"friend{i}@example.com", invite_code=code)

    results = run_together(THREADS, register_friend)

    assert [r for r in results if not isinstance(r, User)] == []
    assert Referral.objects.filter(inviter=ann).count() == THREADS  # everyone registered
    tally = Counter(Referral.objects.values_list("registration_status", flat=True))
    assert tally == {RegistrationReward.GRANTED: 5, RegistrationReward.DAILY_CAP: THREADS - 5}
    assert balance(ann) == 100 + 5 * 50
    assert len(referral_entries(ann)) == 5
    assert reconcile() == []


def test_payments_and_registrations_along_one_referral_chain_at_once_do_not_deadlock() -> None:
    """Zed invited Ann, Ann invited Bob. At once: Ann buys (locking Ann's account, then
    rewarding Zed), Bob buys (locking Bob's account, then rewarding Ann), and newcomers register
    with Ann's code (locking Ann's user row, then rewarding Ann). Each payment is sent the way
    the purchase flow sends it: inside the transaction that granted the buyer's credits, with
    the buyer's account still locked."""
    zed = registered_user(email="zed@example.com")
    ann = register("ann@example.com", invite_code=zed.invite_code)
    bob = register("bob@example.com", invite_code=ann.invite_code)
    purchases = [purchase_of(ann if i % 3 == 0 else bob) for i in range(THREADS)]

    def act(i: int) -> object:
        if i % 3 == 2:
            return register(f"newcomer{i}@example.com", invite_code=ann.invite_code)
        purchase = purchases[i]
        with transaction.atomic():
            credits_services.credits_grant(
                user_id=purchase.user_id,
                amount=purchase.credits,
                source=LotSource.PURCHASE,
                idempotency_key=f"purchase:{purchase.pk}",
                reference=f"purchase:{purchase.pk}",
            )
            purchase_paid.send(sender=Purchase, purchase=purchase)
        return None

    results = run_together(THREADS, act)

    assert [r for r in results if isinstance(r, BaseException)] == []
    newcomers = THREADS // 3
    ann_purchases = len(range(0, THREADS, 3))
    bob_purchases = THREADS - newcomers - ann_purchases
    assert balance(zed) == 100 + 50 + 500
    assert balance(ann) == 100 + 50 * (1 + newcomers) + 500 + 500 * ann_purchases
    assert balance(bob) == 100 + 500 * bob_purchases
    assert reconcile() == []
