"""The one-round-trip authorize (PostgreSQL): once a process has seen a key, an allowed request
costs one database call, and every answer that is not "allowed" takes its rate-limit count back
and is decided exactly as the two-step path decides it (credits/gateway/views.py)."""

import pytest
from django.db import connection

from accounts.services import api_key_revoke
from credits import clock, services
from credits.gateway.ratelimit import limiter_peek, tier_for_balance
from credits.models import CreditAccount, Hold, LotSource
from credits.reconciliation import reconcile
from tests.gateway.conftest import (
    Customer,
    Gateway,
    funded_customer,
    gateway_calls,
    start_of_next,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the one-round-trip path exists on PostgreSQL only")


def seen(gateway: Gateway, balance: int) -> Customer:
    """A customer whose key this process has seen once (allowed, settled as a failure)."""
    start_of_next("minute")
    customer = funded_customer(balance)
    first = gateway.authorize(customer.raw_key, "req_first")
    assert first["allowed"] is True
    assert first["headers"]["X-RateLimit-Remaining"] == str(
        int(first["headers"]["X-RateLimit-Limit"]) - 1
    )
    assert gateway.settle("req_first", "failure").status_code == 200
    return customer


def test_an_allowed_request_of_a_seen_key_costs_one_database_call(gateway: Gateway) -> None:
    customer = seen(gateway, 500)
    with gateway_calls() as called:
        decision = gateway.authorize(customer.raw_key)
    assert called == ["gateway_authorize"]
    assert decision["allowed"] is True
    assert decision["headers"]["X-RateLimit-Remaining"] == "58"
    assert decision["credits_remaining"] == 499
    assert CreditAccount.objects.get(pk=customer.user.pk).reserved == 1
    assert reconcile() == []


def test_the_first_request_of_a_key_is_decided_in_two_steps(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(500)
    with gateway_calls() as called:
        assert gateway.authorize(customer.raw_key)["allowed"] is True
    assert called == ["gateway_authorize_check", "gateway_hold_create"]


def test_a_key_revoked_after_it_was_seen_is_a_401_that_consumes_no_quota(
    gateway: Gateway,
) -> None:
    customer = seen(gateway, 500)
    _, other_raw = customer.new_key()
    api_key_revoke(user=customer.user, key_id=customer.key.pk)
    with gateway_calls() as called:
        decision = gateway.authorize(customer.raw_key)
    assert called[0] == "gateway_authorize"  # tried in one, refused, decided afresh
    assert (decision["allowed"], decision["status"], decision["headers"]) == (False, 401, {})
    assert Hold.objects.filter(status="live").count() == 0
    # Nothing of the revoked key's count remains: undone, not left to the minute's end.
    tier = tier_for_balance(500)
    assert tier is not None
    peek = limiter_peek(key_id=str(customer.key.pk), tier=tier, now=clock.now())
    assert [w.count for w in peek.windows] == [1, 1, 1]
    assert gateway.authorize(other_raw)["headers"]["X-RateLimit-Remaining"] == "59"


def test_an_account_frozen_after_its_key_was_seen_is_a_403_that_consumes_no_quota(
    gateway: Gateway,
) -> None:
    customer = seen(gateway, 500)
    services.account_freeze(user_id=customer.user.pk, reason="dispute")
    for _ in range(3):
        decision = gateway.authorize(customer.raw_key)
        assert decision["status"] == 403
        assert decision["error"]["error"]["code"] == "account_frozen"
        # The first request's count only: each denial took its own back before answering.
        assert decision["headers"]["X-RateLimit-Remaining"] == "59"
    assert not Hold.objects.filter(status="live").exists()
    services.account_unfreeze(user_id=customer.user.pk)
    assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Remaining"] == "58"


def test_a_balance_that_left_the_seen_tier_is_decided_with_the_new_tier(
    gateway: Gateway,
) -> None:
    customer = seen(gateway, 100)  # tier 20/min, as this process remembers the key
    first_tier = Hold.objects.get(request_id="req_first").answer_tier
    assert first_tier
    services.credits_grant(
        user_id=customer.user.pk,
        amount=1,
        source=LotSource.PURCHASE,
        expires_at=None,
        idempotency_key="test-grant:cross",
    )
    with gateway_calls() as called:
        decision = gateway.authorize(customer.raw_key)
    assert called == ["gateway_authorize", "gateway_authorize_check", "gateway_hold_create"]
    assert decision["allowed"] is True and decision["tier"] != first_tier
    # Counted once, under the 101-credit tier (60/min): 60 - 2 requests.
    assert decision["headers"]["X-RateLimit-Remaining"] == "58"
    assert decision["headers"]["X-RateLimit-Limit"] == "60"
    # And the next one goes in one call again, remembering the new balance.
    with gateway_calls() as called:
        assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Remaining"] == "57"
    assert called == ["gateway_authorize"]
    assert reconcile() == []


def test_a_request_id_held_on_another_account_is_a_409_from_a_seen_key(
    gateway: Gateway,
) -> None:
    customer = seen(gateway, 500)
    other = funded_customer(500)
    assert gateway.authorize(other.raw_key, "req_shared")["allowed"] is True
    response = gateway.post(
        "authorize",
        {"api_key": customer.raw_key, "request_id": "req_shared", "format": "openai"},
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_id_conflict"
    assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Remaining"] == "58"
    assert CreditAccount.objects.get(pk=customer.user.pk).reserved == 1


def test_the_gateway_calls_are_prepared_once_per_connection(gateway: Gateway) -> None:
    # config/settings.py sets psycopg's prepare_threshold: without it PostgreSQL parses and
    # plans the call of the SQL function on every request.
    customer = seen(gateway, 500)
    decision = gateway.authorize(customer.raw_key, "req_prepared")
    assert decision["allowed"] is True
    assert gateway.settle("req_prepared").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = " ".join(row[0] for row in cursor.fetchall())
    assert "gateway_authorize(" in prepared
    assert "gateway_settle(" in prepared
