"""Spend controls and key rotation (issue 18, CONTRACT.md part 2): key budgets, the account
monthly limit and allowed models stop spend exactly, under concurrency, in both backends."""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from accounts import budgets
from accounts.models import ApiKey
from accounts.services import api_key_rotate, api_key_update
from credits import clock, services
from credits.models import CreditAccount
from credits.reconciliation import reconcile
from tests import concurrency
from tests.gateway.conftest import Gateway, funded_customer, start_of_next

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("backend")]

THREADS = 20
BIG = 20_000  # tier 10,000+: 500 requests a minute, so the rate limit never decides here


def run_together(token: str, calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Authorize (raw key, request id) pairs on THREADS threads released at once
    (tests.concurrency), each with its own client and connection; thread n takes every
    THREADS-th call from n."""

    def work(offset: int) -> list[tuple[int, dict[str, Any]]]:
        gateway = Gateway(token, Client())
        return [
            (index, gateway.authorize(*calls[index]))
            for index in range(offset, len(calls), THREADS)
        ]

    results: list[Any] = [None] * len(calls)
    for done in concurrency.run_together(THREADS, work):
        assert not isinstance(done, BaseException), done
        for index, decision in done:
            results[index] = decision
    return results


def verdict(decision: dict[str, Any]) -> str:
    return "allowed" if decision["allowed"] else decision["error"]["error"]["code"]


@pytest.mark.parametrize(
    ("account_limit", "keys", "expected"),
    [
        (None, 1, {"allowed": 37, "key_budget_exceeded": 263}),
        (30, 1, {"allowed": 30, "account_limit_exceeded": 270}),
        # Two keys of budget 37 share an account limit of 50.
        (50, 2, {"allowed": 50, "account_limit_exceeded": 250}),
    ],
)
def test_300_concurrent_authorizations_never_pass_a_budget_or_the_account_limit(
    service_token: str, account_limit: int | None, keys: int, expected: dict[str, int]
) -> None:
    start_of_next("minute")
    customer = funded_customer(BIG)
    budget = {"credits": 37, "period": "month"}
    api_key_update(user=customer.user, key_id=customer.key.pk, budget=budget)
    raws = [customer.raw_key] + [customer.new_key(budget=budget)[1] for _ in range(keys - 1)]
    services.account_limit_set(user_id=customer.user.pk, monthly_credit_limit=account_limit)
    calls = [(raws[n % keys], f"req_{n}_{account_limit}") for n in range(300)]
    decisions = run_together(service_token, calls)
    assert Counter(verdict(d) for d in decisions) == expected
    assert reconcile() == []

    # Failures release budget, successes consume it: settle half of each, then exactly the
    # released credits can be authorized again.
    allowed = [calls[n][1] for n, d in enumerate(decisions) if d["allowed"]]
    gateway = Gateway(service_token)
    failed = allowed[::2]
    for request_id in allowed:
        outcome = "failure" if request_id in failed else "success"
        assert gateway.settle(request_id, outcome).status_code == 200
    charged = len(allowed) - len(failed)
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert services.account_month_spent(account=account, now=clock.now()) == charged
    assert sum(k.held for k in ApiKey.objects.filter(user=customer.user)) == 0
    again = run_together(service_token, [(raws[n % keys], f"again_{n}") for n in range(100)])
    assert Counter(verdict(d) for d in again)["allowed"] == len(failed)
    assert reconcile() == []


def test_a_late_success_after_expiry_never_passes_the_budget(gateway: Gateway) -> None:
    customer = funded_customer(BIG)
    api_key_update(
        user=customer.user, key_id=customer.key.pk, budget={"credits": 1, "period": "total"}
    )
    first = gateway.authorize(customer.raw_key, "late_1")
    assert first["allowed"]
    clock.advance(timedelta(seconds=700))  # the hold expires, and its budget is free again
    second = gateway.authorize(customer.raw_key, "late_2")
    assert second["allowed"]
    assert gateway.settle("late_2").json()["charged"] == 1
    # The first request's success arrives late: charging it would pass the budget of 1.
    assert gateway.settle("late_1").json()["charged"] == 0
    key = ApiKey.objects.get(pk=customer.key.pk)
    assert (key.spent_total, key.held) == (1, 0)


def _spend(gateway: Gateway, raw: str, n: int, tag: str) -> None:
    for i in range(n):
        decision = gateway.authorize(raw, f"{tag}_{i}")
        assert decision["allowed"], decision
        assert gateway.settle(f"{tag}_{i}").json()["charged"] == 1


def _move_to(moment: datetime) -> None:
    clock.advance(moment - clock.now())


def test_periods_roll_over_at_midnight_utc_and_total_never_resets(gateway: Gateway) -> None:
    now = clock.now()
    _move_to(datetime(now.year + 1, 1, 31, 23, 50, tzinfo=UTC))  # a month's last day
    customer = funded_customer(BIG)
    day_raw = customer.raw_key
    api_key_update(
        user=customer.user, key_id=customer.key.pk, budget={"credits": 2, "period": "day"}
    )
    total_key, total_raw = customer.new_key(budget={"credits": 3, "period": "total"})
    _spend(gateway, day_raw, 2, "d1")
    _spend(gateway, total_raw, 2, "t1")
    assert verdict(gateway.authorize(day_raw, "d1_over")) == "key_budget_exceeded"
    services.account_limit_set(user_id=customer.user.pk, monthly_credit_limit=4)
    assert verdict(gateway.authorize(total_raw, "t1_over")) == "account_limit_exceeded"

    _move_to(datetime(now.year + 1, 1, 31, 23, 59, 59, tzinfo=UTC))  # not yet
    assert verdict(gateway.authorize(day_raw, "d2_early")) == "account_limit_exceeded"
    services.account_limit_set(user_id=customer.user.pk, monthly_credit_limit=None)
    assert verdict(gateway.authorize(day_raw, "d2_early2")) == "key_budget_exceeded"
    services.account_limit_set(user_id=customer.user.pk, monthly_credit_limit=4)

    _move_to(datetime(now.year + 1, 2, 1, 0, 0, 0, tzinfo=UTC))  # a new day and month
    _spend(gateway, day_raw, 2, "d2")  # the day budget and the month's limit start again
    assert verdict(gateway.authorize(day_raw, "d2_over")) == "key_budget_exceeded"
    _spend(gateway, total_raw, 1, "t2")  # total: 3 of 3 over two months
    assert verdict(gateway.authorize(total_raw, "t2_over")) == "key_budget_exceeded"
    key = ApiKey.objects.get(pk=customer.key.pk)
    assert budgets.key_spent(key, clock.now()) == 2
    assert budgets.period_end("day", clock.now()) == datetime(now.year + 1, 2, 2, tzinfo=UTC)

    # Lowering a budget below what is spent denies the next request.
    services.account_limit_set(user_id=customer.user.pk, monthly_credit_limit=None)
    api_key_update(
        user=customer.user, key_id=total_key.pk, budget={"credits": 10, "period": "month"}
    )
    assert gateway.authorize(total_raw, "t3")["allowed"]
    api_key_update(
        user=customer.user, key_id=total_key.pk, budget={"credits": 1, "period": "month"}
    )
    assert verdict(gateway.authorize(total_raw, "t3_over")) == "key_budget_exceeded"


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_denial_bodies_and_headers_are_the_contracts(gateway: Gateway, fmt: str) -> None:
    start_of_next("minute")
    customer = funded_customer(500)
    api_key_update(
        user=customer.user,
        key_id=customer.key.pk,
        budget={"credits": 1, "period": "day"},
        allowed_models=["kimi-k2-0905"],
    )
    assert gateway.authorize(customer.raw_key, "ok_1", fmt)["allowed"]
    other = gateway.authorize(customer.raw_key, "model_1", fmt, model="gpt-4")
    budget = gateway.authorize(customer.raw_key, "budget_1", fmt)
    api_key_update(user=customer.user, key_id=customer.key.pk, budget=None)
    model = gateway.authorize(customer.raw_key, "model_2", fmt, model="gpt-4")
    services.account_limit_set(user_id=customer.user.pk, monthly_credit_limit=1)
    limit = gateway.authorize(customer.raw_key, "limit_1", fmt)

    assert verdict_of(other, fmt) == verdict_of(budget, fmt)  # the budget is checked first
    for decision, code, openai_type in [
        (budget, "key_budget_exceeded", "insufficient_quota"),
        (limit, "account_limit_exceeded", "insufficient_quota"),
        (model, "model_not_allowed", "invalid_request_error"),
    ]:
        assert decision["allowed"] is False
        assert decision["status"] == 403
        error = decision["error"]
        if fmt == "openai":
            assert set(error) == {"error"}
            assert error["error"]["code"] == code
            assert error["error"]["type"] == openai_type
            assert error["error"]["message"]
            assert "x-ratelimit-limit-requests" in decision["headers"]
        else:
            assert error["type"] == "error"
            assert error["error"]["type"] == "permission_error"
            assert error["error"]["message"]
            assert "anthropic-ratelimit-requests-limit" in decision["headers"]
        assert decision["headers"]["X-Credits-Remaining"] == "499"
        assert decision["headers"]["X-RateLimit-Limit"] == "60"
        assert "Retry-After" not in decision["headers"]


def verdict_of(decision: dict[str, Any], fmt: str) -> str:
    if fmt == "openai":
        return str(decision["error"]["error"]["code"])
    return str(decision["error"]["error"]["message"])


def test_rotation_keeps_the_key_and_the_old_secret_works_until_the_grace_ends(
    gateway: Gateway,
) -> None:
    customer = funded_customer(BIG)
    old = customer.raw_key
    api_key_update(
        user=customer.user, key_id=customer.key.pk, budget={"credits": 3, "period": "total"}
    )
    _spend(gateway, old, 1, "before")
    key, new = api_key_rotate(user=customer.user, key_id=customer.key.pk, grace_seconds=60)
    assert key.pk == customer.key.pk and new != old
    both = [gateway.authorize(old, "r_old"), gateway.authorize(new, "r_new")]
    assert [d["allowed"] for d in both] == [True, True]
    assert {d["key_id"] for d in both} == {str(key.pk)}
    # A replay with the other secret of the same key is a replay, not a conflict.
    assert gateway.authorize(new, "r_old")["hold_id"] == both[0]["hold_id"]
    # Spent and held carry over: 1 spent + 2 held = the budget of 3.
    assert verdict(gateway.authorize(new, "r_over")) == "key_budget_exceeded"
    clock.advance(timedelta(seconds=61))
    assert gateway.authorize(old, "r_old_late")["status"] == 401
    assert verdict(gateway.authorize(new, "r_new_late")) != "invalid_api_key"

    # A second rotation ends the older secret at once; grace 0 ends the current one at once.
    _, newer = api_key_rotate(user=customer.user, key_id=key.pk, grace_seconds=3600)
    assert gateway.authorize(old, "r3_old")["status"] == 401
    _, newest = api_key_rotate(user=customer.user, key_id=key.pk, grace_seconds=0)
    assert gateway.authorize(new, "r4_new")["status"] == 401
    assert gateway.authorize(newer, "r4_newer")["status"] == 401
    api_key_update(user=customer.user, key_id=key.pk, budget=None)
    assert gateway.authorize(newest, "r4_newest")["allowed"]


def test_rotation_concurrent_with_authorizations_never_refuses_either_secret(
    service_token: str,
) -> None:
    start_of_next("minute")
    customer = funded_customer(BIG)
    old = customer.raw_key
    rotated: list[str] = []
    stop = threading.Event()

    def rotate() -> None:
        try:
            _, new = api_key_rotate(user=customer.user, key_id=customer.key.pk, grace_seconds=600)
            rotated.append(new)
        finally:
            connection.close()
            stop.set()

    thread = threading.Thread(target=rotate)
    calls = [(old, f"rot_{n}") for n in range(100)]
    thread.start()
    decisions = run_together(service_token, calls)
    thread.join()
    assert all(d["allowed"] for d in decisions)
    assert Gateway(service_token).authorize(rotated[0], "rot_new")["allowed"]
    assert reconcile() == []
