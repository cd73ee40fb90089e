"""Real races on real PostgreSQL and Redis: 20 threads released together by a barrier, each
with its own database connection, against both database implementations and both limiters."""

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import uuid4

import pytest
from django.test import Client, override_settings

from accounts.models import ApiKey
from credits import clock
from credits.gateway.models import UsageRecord
from credits.gateway.ratelimit import limiter_peek, tier_for_balance
from credits.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry
from credits.reconciliation import reconcile
from tests import concurrency
from tests.gateway.conftest import Gateway, funded_customer, start_of_next

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("backend", "limiter"),
]

THREADS = 20  # each holds a connection (tests/concurrency.py checks they are free)
T = TypeVar("T")


@pytest.fixture(params=["redis", "in-process"])
def limiter(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        yield request.param
    else:
        with override_settings(REDIS_URL=""):
            yield request.param


def run_together(jobs: list[Callable[[Gateway], T]], token: str) -> list[T]:
    """Run `jobs` on THREADS threads that all start at once; each thread its own client and
    connection (tests/concurrency.py)."""
    results: list[Any] = [None] * len(jobs)

    def worker(offset: int) -> None:
        gateway = Gateway(token, Client())
        for index in range(offset, len(jobs), THREADS):
            results[index] = jobs[index](gateway)

    errors = [r for r in concurrency.run_together(THREADS, worker) if r is not None]
    assert not errors, errors
    return results


def outcome(decision: dict[str, Any]) -> str:
    return "allowed" if decision["allowed"] else str(decision["status"])


def test_500_authorizations_on_one_20_per_minute_key_allow_exactly_20(
    service_token: str,
) -> None:
    start_of_next("minute")
    customer = funded_customer(100)
    jobs = [lambda g: g.authorize(customer.raw_key) for _ in range(500)]
    decisions = run_together(jobs, service_token)
    assert Counter(outcome(d) for d in decisions) == {"allowed": 20, "429": 480}
    remaining = sorted(
        int(d["headers"]["X-RateLimit-Remaining"]) for d in decisions if d["allowed"]
    )
    assert remaining == list(range(20))  # each allowed request saw its own count
    assert Hold.objects.filter(status=HoldStatus.LIVE).count() == 20
    assert CreditAccount.objects.get(pk=customer.user.pk).reserved == 20
    assert reconcile() == []


# 20 keys made at once: the hourly key-creation limit is not what this test is about.
@override_settings(KEY_CREATIONS_PER_HOUR=0)
def test_300_authorizations_over_20_keys_of_a_100_credit_account_allow_exactly_100(
    service_token: str,
) -> None:
    start_of_next("minute")
    customer = funded_customer(100)
    keys = [customer.raw_key] + [customer.new_key()[1] for _ in range(19)]
    jobs: list[Callable[[Gateway], dict[str, Any]]] = [
        functools.partial(Gateway.authorize, api_key=keys[n % 20]) for n in range(300)
    ]
    decisions = run_together(jobs, service_token)
    assert Counter(outcome(d) for d in decisions) == {"allowed": 100, "403": 200}
    assert all(
        d["error"]["error"]["code"] == "insufficient_credits" for d in decisions if not d["allowed"]
    )
    assert reconcile() == []
    # The 200 denials consumed no quota: each key's windows count only its allowed requests
    # (some were counted, then taken back when the hold found no credit).
    allowed_per_key = Counter(d["key_id"] for d in decisions if d["allowed"])
    tier = tier_for_balance(100)
    assert tier is not None
    for key_id in {str(k.pk) for k in ApiKey.objects.filter(user=customer.user)}:
        windows = limiter_peek(key_id=key_id, tier=tier, now=clock.now()).windows
        assert [w.count for w in windows] == [allowed_per_key[key_id]] * 3

    held = [Hold.objects.get(pk=d["hold_id"]).request_id for d in decisions if d["allowed"]]
    settles = run_together(
        [functools.partial(lambda g, r: g.settle(r).json(), r=r) for r in held], service_token
    )
    assert sum(s["charged"] for s in settles) == 100
    # Every credit was held, so committing one leaves the available balance at 0 throughout.
    assert {s["credits_remaining"] for s in settles} == {0}
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved, account.consumed) == (0, 0, 100)
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 100
    assert UsageRecord.objects.filter(charged=1).count() == 100
    assert reconcile() == []
    assert Gateway(service_token).authorize(customer.raw_key)["headers"] == {
        "X-Credits-Remaining": "0"
    }


def test_one_request_id_authorized_40_times_at_once_holds_once_and_counts_once(
    service_token: str,
) -> None:
    start_of_next("minute")
    customer = funded_customer(50)
    request_id = f"req_{uuid4().hex}"
    decisions = run_together(
        [lambda g: g.authorize(customer.raw_key, request_id) for _ in range(THREADS)],
        service_token,
    )
    allowed = [d for d in decisions if d["allowed"]]
    assert allowed and all(d == allowed[0] for d in allowed)
    # Copies that arrive while the first is still in flight are counted by the limiter before
    # the database can tell them apart from new requests: some may see a 429 then (a retry
    # after the first answered is always a replay). None is ever allowed twice.
    assert {outcome(d) for d in decisions} <= {"allowed", "429"}
    assert Hold.objects.filter(request_id=request_id).count() == 1
    assert CreditAccount.objects.get(pk=customer.user.pk).reserved == 1
    # Every copy but the one that held was taken back: the key's windows count one request.
    tier = tier_for_balance(50)
    assert tier is not None
    windows = limiter_peek(key_id=str(customer.key.pk), tier=tier, now=clock.now()).windows
    assert [w.count for w in windows] == [1, 1, 1]
    assert Gateway(service_token).authorize(customer.raw_key, request_id) == allowed[0]
    assert reconcile() == []


def test_one_request_settled_40_times_at_once_is_charged_and_recorded_once(
    service_token: str,
) -> None:
    customer = funded_customer(50)
    gateway = Gateway(service_token)
    request_id = gateway.authorize(customer.raw_key)["hold_id"]
    request_id = Hold.objects.get(pk=request_id).request_id
    answers = run_together(
        [lambda g: g.settle(request_id).json() for _ in range(THREADS)], service_token
    )
    assert all(
        a == {"request_id": request_id, "charged": 1, "credits_remaining": 49} for a in answers
    )
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 1
    assert UsageRecord.objects.count() == 1
    assert reconcile() == []
