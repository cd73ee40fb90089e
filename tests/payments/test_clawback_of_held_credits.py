"""A refund, dispute or reversed reward claims credits that live holds cover: what the contract's
formula claws back is taken in full once the holds end (a released or expired hold's credit is
taken, a committed one's is spent), with holds, the refund, releases, commits and expiry racing
on real PostgreSQL, through both database implementations of the gateway."""

import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum
from django.test import Client

from accounts.service_tokens import clear_cache, service_token_create
from accounts.services import api_key_create
from credits import clock
from credits import services as ledger
from credits.models import CreditAccount, EntryKind, LedgerEntry, Lot
from credits.payments.models import Purchase
from credits.reconciliation import reconcile
from referrals.models import PaymentReward
from tests.factories import registered_user
from tests.gateway.conftest import Gateway, backend  # noqa: F401
from tests.referrals.conftest import referral_of, register
from tests.stripe_support import build_event, dispute

from .conftest import completion_event, deliver
from .test_handlers import paid, refund_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("backend")]

THREADS = 20  # each with its own connection: well inside the shared server's 100


@pytest.fixture
def service_token() -> str:
    clear_cache()
    return service_token_create(name="gateway-clawbacks")[1]


def run_together(jobs: list[Callable[[Gateway], Any]], token: str) -> list[Any]:
    """Run `jobs` on THREADS threads released together, each with its own client and
    connection; return the results in order, re-raising the first error."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        gateway = Gateway(token, Client())
        try:
            barrier.wait(timeout=30)
            for index in range(offset, len(jobs), THREADS):
                results[index] = jobs[index](gateway)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    return results


def lot_sum(lot: Lot, kind: str) -> int:
    total = LedgerEntry.objects.filter(lot=lot, kind=kind).aggregate(t=Sum("amount"))["t"]
    return -(total or 0)


def authorize_one(gateway: Gateway, *, raw_key: str, request_id: str) -> Any:
    return gateway.authorize(raw_key, request_id=request_id)


def authorize_many(gateway_token: str, raw_key: str, count: int) -> list[str]:
    request_ids = [f"req-{n}-{raw_key[-6:]}" for n in range(count)]
    jobs: list[Callable[[Gateway], Any]] = [
        functools.partial(authorize_one, raw_key=raw_key, request_id=r) for r in request_ids
    ]
    answers = run_together(jobs, gateway_token)
    assert all(answer["allowed"] for answer in answers), answers
    return request_ids


def settle_job(request_id: str, outcome: str) -> Callable[[Gateway], Any]:
    def job(gateway: Gateway) -> Any:
        response = gateway.settle(request_id, outcome)
        assert response.status_code == 200, response.content
        return response.json()

    return job


@pytest.mark.usefixtures("stripe_settings")
def test_a_full_refund_racing_settles_and_expiry_takes_every_credit_not_charged(
    service_token: str,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")  # 5,000 credits, expiring first: spent (held) first
    _, raw_key = api_key_create(user=user, name="main")
    request_ids = authorize_many(service_token, raw_key, 60)
    commits, releases, abandoned = request_ids[:20], request_ids[20:40], request_ids[40:]

    def refund(gateway: Gateway) -> None:
        assert deliver(refund_event(purchase, purchase.price_amount)).status_code == 200

    jobs: list[Callable[[Gateway], Any]] = [refund]
    jobs += [settle_job(r, "success") for r in commits]
    jobs += [settle_job(r, "failure") for r in releases]
    run_together(jobs, service_token)

    assert purchase.lot_id is not None
    lot = Lot.objects.get(pk=purchase.lot_id)
    assert lot.reserved == 20  # the abandoned holds are still live
    assert lot.clawback_owed == 20  # and every one of them is owed

    # The abandoned holds expire: a sweep and late settles race to write it.
    clock.advance(timedelta(seconds=661))
    late = [settle_job(r, "failure") for r in abandoned[:10]]
    run_together([lambda g: ledger.accounts_sweep(), *late], service_token)
    ledger.accounts_sweep()

    lot.refresh_from_db()
    purchase.refresh_from_db()
    assert (lot.remaining, lot.reserved, lot.clawback_owed) == (0, 0, 0)
    assert lot_sum(lot, EntryKind.CHARGE) == 20
    assert lot_sum(lot, EntryKind.CLAWBACK) == 5000 - 20  # charged + clawed back = the formula
    assert (lot.clawback_claimed, lot.clawback_uncollectable) == (5000, 20)
    assert purchase.credits_clawed_back == 4980
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (100, 0)  # the signup lot is untouched
    assert reconcile() == []


@pytest.mark.usefixtures("stripe_settings")
def test_a_partial_refund_takes_only_what_the_formula_claims_as_holds_end(
    service_token: str,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    ledger.credits_adjust(
        user_id=user.pk, amount=-4990, reason="leave ten", idempotency_key="leave-ten"
    )  # the Standard lot keeps 10 credits; the signup lot 100
    assert purchase.lot_id is not None
    lot = Lot.objects.get(pk=purchase.lot_id)
    assert lot.remaining == 10
    _, raw_key = api_key_create(user=user, name="main")
    request_ids = authorize_many(service_token, raw_key, 10)  # all ten held

    # Half refunded: floor(5,000 x 1,500 / 2,999) = 2,500 claimed; 10 held, 4,990 spent.
    assert deliver(refund_event(purchase, 1500)).status_code == 200
    lot.refresh_from_db()
    assert (lot.clawback_claimed, lot.clawback_owed, lot.clawback_uncollectable) == (
        2500,
        10,
        2490,
    )
    run_together(
        [settle_job(r, "success" if n % 2 else "failure") for n, r in enumerate(request_ids)],
        service_token,
    )

    lot.refresh_from_db()
    assert (lot.remaining, lot.reserved, lot.clawback_owed) == (0, 0, 0)
    assert lot_sum(lot, EntryKind.CLAWBACK) == 5  # the five released credits
    assert lot.clawback_uncollectable == 2490 + 5  # the five committed ones were spent
    assert reconcile() == []


@pytest.mark.usefixtures("stripe_settings")
def test_a_dispute_takes_the_held_credits_when_their_holds_are_released(
    service_token: str,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    _, raw_key = api_key_create(user=user, name="main")
    request_ids = authorize_many(service_token, raw_key, 20)

    opened = dispute(amount=2999, charge="ch_held", payment_intent=purchase.payment_intent_id)
    assert deliver(build_event("charge.dispute.created", opened)).status_code == 200
    gateway = Gateway(service_token)
    for request_id in request_ids:  # the frozen account's requests in flight end as failures
        assert gateway.settle(request_id, "failure").status_code == 200

    assert purchase.lot_id is not None
    lot = Lot.objects.get(pk=purchase.lot_id)
    assert (lot.remaining, lot.clawback_owed, lot.clawback_uncollectable) == (0, 0, 0)
    assert lot_sum(lot, EntryKind.CLAWBACK) == 5000
    purchase.refresh_from_db()
    assert purchase.credits_clawed_back == 5000
    assert CreditAccount.objects.get(pk=user.pk).balance == 100
    assert reconcile() == []


@pytest.mark.usefixtures("stripe_settings")
def test_a_reversed_referral_reward_held_by_the_inviter_is_taken_when_the_holds_end(
    service_token: str,
) -> None:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    starter = Purchase.objects.get(pk=_pay_starter(bob).pk)
    # Ann spends her signup and invite credits (never expiring, older) so that her requests
    # hold the 500-credit reward lot.
    ledger.credits_adjust(user_id=ann.pk, amount=-150, reason="spent", idempotency_key="ann-150")
    _, raw_key = api_key_create(user=ann, name="main")
    request_ids = authorize_many(service_token, raw_key, 30)
    reward_lot = Lot.objects.get(pk=referral_of(bob).payment_entry.lot_id)  # type: ignore[union-attr]
    assert reward_lot.reserved == 30

    assert deliver(refund_event(starter, starter.price_amount)).status_code == 200
    assert referral_of(bob).payment_status == PaymentReward.REVERSED
    gateway = Gateway(service_token)
    for n, request_id in enumerate(request_ids):
        outcome = "success" if n < 10 else "failure"
        assert gateway.settle(request_id, outcome).status_code == 200

    reward_lot.refresh_from_db()
    assert (reward_lot.remaining, reward_lot.clawback_owed) == (0, 0)
    assert lot_sum(reward_lot, EntryKind.CHARGE) == 10
    assert lot_sum(reward_lot, EntryKind.CLAWBACK) == 490
    assert reward_lot.clawback_uncollectable == 10
    assert CreditAccount.objects.get(pk=ann.pk).balance == 0
    assert reconcile() == []


def _pay_starter(user: Any) -> Purchase:
    from .conftest import buy

    purchase = buy(user, "starter")
    assert deliver(completion_event(purchase)).status_code == 200
    purchase.refresh_from_db()
    return purchase
