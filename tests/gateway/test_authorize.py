"""`POST /internal/v1/authorize`: each decision, its exact body and headers in both formats,
the check order, replays and conflicts (CONTRACT.md, "Internal API")."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from django.utils import timezone

from accounts.services import api_key_revoke
from credits import clock, services
from credits.gateway.models import Tier
from credits.models import CreditAccount, Hold, HoldStatus
from credits.reconciliation import reconcile
from tests.gateway.conftest import (
    RATE_LIMITED_20_PER_MINUTE,
    Gateway,
    funded_customer,
    start_of_next,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("backend")]

OPENAI_401 = {
    "error": {
        "message": "Invalid API key provided",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}
ANTHROPIC_401 = {
    "type": "error",
    "error": {"type": "authentication_error", "message": "Invalid API key"},
}
OPENAI_DIALECT = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
}
ANTHROPIC_DIALECT = {
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
}
DOCUMENTED = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


def assert_seconds_left(value: str, end: int) -> None:
    """`value` (`12s`, or a bare `12`) is the whole seconds from now to `end`, give or take
    the second that may have ticked between the view's clock reading and ours."""
    seconds = int(value.removesuffix("s"))
    expected = end - int(clock.now().timestamp())
    assert expected <= seconds <= expected + 1, (value, expected)


def minute_end() -> int:
    now = clock.now()
    return int(now.replace(second=0, microsecond=0).timestamp()) + 60


# --- allowed ---------------------------------------------------------------------------------


def test_an_allowed_request_returns_the_contract_decision_with_openai_headers(
    gateway: Gateway,
) -> None:
    start_of_next("minute")
    customer = funded_customer(522)
    decision = gateway.authorize(customer.raw_key, "req_123", fmt="openai")
    hold = Hold.objects.get(request_id="req_123")
    assert decision == {
        "allowed": True,
        "hold_id": str(hold.pk),
        "hold_expires_at": hold.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user_id": str(customer.user.pk),
        "key_id": str(customer.key.pk),
        "tier": "101-1,000",
        "credits_remaining": 521,
        "headers": {
            "X-RateLimit-Limit": "60",
            "X-RateLimit-Remaining": "59",
            "X-RateLimit-Reset": str(minute_end()),
            "X-Credits-Remaining": "521",
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": decision["headers"]["x-ratelimit-reset-requests"],
        },
    }
    assert_seconds_left(decision["headers"]["x-ratelimit-reset-requests"], minute_end())
    assert abs((hold.expires_at - hold.created_at) - timedelta(seconds=660)) < timedelta(seconds=1)
    assert (hold.status, hold.amount, hold.api_key_id) == (HoldStatus.LIVE, 1, customer.key.pk)
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved) == (522, 1)
    assert reconcile() == []


def test_an_allowed_anthropic_request_carries_only_the_anthropic_dialect(
    gateway: Gateway,
) -> None:
    start_of_next("minute")
    customer = funded_customer(50)
    decision = gateway.authorize(customer.raw_key, fmt="anthropic")
    headers = decision["headers"]
    assert set(headers) == DOCUMENTED | ANTHROPIC_DIALECT | {"X-Credits-Remaining"}
    end = minute_end()
    assert headers["anthropic-ratelimit-requests-limit"] == "20"
    assert headers["anthropic-ratelimit-requests-remaining"] == "19"
    assert headers["anthropic-ratelimit-requests-reset"] == datetime.fromtimestamp(
        end, tz=UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert headers["X-RateLimit-Reset"] == str(end)
    assert headers["X-Credits-Remaining"] == "49"
    assert decision["tier"] == "1-100"


@pytest.mark.parametrize(
    ("balance", "tier", "per_minute"),
    [
        (100, "1-100", 20),
        (101, "101-1,000", 60),
        (1000, "101-1,000", 60),
        (1001, "1,001-10,000", 200),
        (10000, "1,001-10,000", 200),
        (10001, "10,000+", 500),
    ],
)
def test_the_tier_follows_the_balance_before_the_request(
    gateway: Gateway, balance: int, tier: str, per_minute: int
) -> None:
    customer = funded_customer(balance)
    decision = gateway.authorize(customer.raw_key)
    assert decision["tier"] == tier
    assert decision["headers"]["X-RateLimit-Limit"] == str(per_minute)
    assert decision["credits_remaining"] == balance - 1


def test_the_tier_changes_as_the_balance_crosses_each_threshold(gateway: Gateway) -> None:
    # 102 credits: the first request sees 102 (101-1,000), and once one credit is charged,
    # the balance before the next is 101, then 100 (1-100).
    customer = funded_customer(102)
    tiers = []
    for _ in range(3):
        decision = gateway.authorize(customer.raw_key)
        tiers.append(decision["tier"])
        assert gateway.settle(_request_id_of(decision)).status_code == 200
    assert tiers == ["101-1,000", "101-1,000", "1-100"]


def _request_id_of(decision: dict[str, Any]) -> str:
    return Hold.objects.get(pk=decision["hold_id"]).request_id


def test_staff_edits_of_a_tier_apply_after_the_cache_expires(gateway: Gateway) -> None:
    from credits.gateway.ratelimit import tiers_cache_clear

    customer = funded_customer(50)
    assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Limit"] == "20"
    Tier.objects.filter(name="1-100").update(requests_per_minute=7)
    tiers_cache_clear()  # what TIER_CACHE_SECONDS of waiting does
    assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Limit"] == "7"


# --- 401 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "body"), [("openai", OPENAI_401), ("anthropic", ANTHROPIC_401)])
def test_an_unknown_key_is_a_401_with_the_exact_body_and_no_headers(
    gateway: Gateway, fmt: str, body: dict[str, object]
) -> None:
    customer = funded_customer(50)
    unknown = customer.raw_key[:-10] + "A" * 10  # well-formed shape, wrong checksum
    for api_key in (unknown, "sk-kimi-nonsense", "", "Bearer " + customer.raw_key):
        decision = gateway.authorize(api_key, fmt=fmt)
        assert decision == {"allowed": False, "status": 401, "error": body, "headers": {}}
    assert not Hold.objects.exists()


def test_a_well_formed_key_that_was_never_issued_is_a_401(gateway: Gateway) -> None:
    from accounts import secrets

    raw = secrets.new_secret("sk-kimi-")
    funded_customer(5)
    assert gateway.authorize(raw)["status"] == 401


def test_a_revoked_key_is_refused_on_the_very_next_request(gateway: Gateway) -> None:
    customer = funded_customer(50)
    assert gateway.authorize(customer.raw_key)["allowed"] is True
    api_key_revoke(user=customer.user, key_id=customer.key.pk)
    decision = gateway.authorize(customer.raw_key)
    assert (decision["allowed"], decision["status"], decision["headers"]) == (False, 401, {})


def test_an_expired_key_is_refused(gateway: Gateway) -> None:
    customer = funded_customer(50, key_expires_at=timezone.now() + timedelta(hours=1))
    assert gateway.authorize(customer.raw_key)["allowed"] is True
    clock.advance(timedelta(hours=1))
    assert gateway.authorize(customer.raw_key)["status"] == 401


def test_the_key_of_a_deactivated_user_is_refused(gateway: Gateway) -> None:
    customer = funded_customer(50)
    customer.user.is_active = False
    customer.user.save(update_fields=["is_active"])
    assert gateway.authorize(customer.raw_key)["status"] == 401


# --- 403 ---------------------------------------------------------------------------------------


def test_a_frozen_account_is_a_403_in_both_formats_even_with_credits(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(500)
    services.account_freeze(user_id=customer.user.pk, reason="dispute")
    openai = gateway.authorize(customer.raw_key, fmt="openai")
    assert openai["allowed"] is False and openai["status"] == 403
    assert set(openai["error"]) == {"error"}
    error = openai["error"]["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "account_frozen")
    assert error["message"].endswith(".") and "frozen" in error["message"]
    assert openai["headers"] == {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "60",
        "X-RateLimit-Reset": str(minute_end()),
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "60",
        "x-ratelimit-reset-requests": openai["headers"]["x-ratelimit-reset-requests"],
        "X-Credits-Remaining": "500",
    }
    anthropic = gateway.authorize(customer.raw_key, fmt="anthropic")
    assert anthropic["status"] == 403
    assert anthropic["error"] == {
        "type": "error",
        "error": {"type": "permission_error", "message": error["message"]},
    }
    assert set(anthropic["headers"]) == DOCUMENTED | ANTHROPIC_DIALECT | {"X-Credits-Remaining"}
    assert not Hold.objects.exists()


def test_a_frozen_account_is_refused_before_its_missing_credit_is(gateway: Gateway) -> None:
    customer = funded_customer(0)
    services.account_freeze(user_id=customer.user.pk, reason="dispute")
    assert gateway.authorize(customer.raw_key)["error"]["error"]["code"] == "account_frozen"


def test_no_credit_is_a_403_insufficient_credits_without_rate_limit_headers_at_balance_0(
    gateway: Gateway,
) -> None:
    customer = funded_customer(0)
    openai = gateway.authorize(customer.raw_key, fmt="openai")
    assert openai["status"] == 403
    error = openai["error"]["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_credits")
    assert openai["headers"] == {"X-Credits-Remaining": "0"}
    anthropic = gateway.authorize(customer.raw_key, fmt="anthropic")
    assert anthropic["error"] == {
        "type": "error",
        "error": {"type": "permission_error", "message": error["message"]},
    }
    assert anthropic["headers"] == {"X-Credits-Remaining": "0"}


def test_credits_reserved_by_live_holds_are_not_available(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(2)
    first = gateway.authorize(customer.raw_key)
    second = gateway.authorize(customer.raw_key)
    assert (first["credits_remaining"], second["credits_remaining"]) == (1, 0)
    third = gateway.authorize(customer.raw_key, fmt="anthropic")
    assert third["status"] == 403
    # The balance (2) still has a tier, so the 403 carries the rate-limit headers: the
    # window as it stands (two counted), not counting the denial.
    assert third["headers"]["X-RateLimit-Limit"] == "20"
    assert third["headers"]["X-RateLimit-Remaining"] == "18"
    assert third["headers"]["anthropic-ratelimit-requests-remaining"] == "18"
    assert third["headers"]["X-Credits-Remaining"] == "0"
    assert Hold.objects.filter(status=HoldStatus.LIVE).count() == 2
    assert reconcile() == []


def test_an_expired_lot_is_never_reserved(gateway: Gateway) -> None:
    customer = funded_customer(5, expires_at=timezone.now() + timedelta(days=1))
    clock.advance(timedelta(days=1))
    decision = gateway.authorize(customer.raw_key)
    assert decision["status"] == 403
    assert decision["headers"] == {"X-Credits-Remaining": "0"}
    assert reconcile() == []


# --- 429 ---------------------------------------------------------------------------------------


def test_the_21st_request_in_a_minute_is_a_429_naming_the_minute(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(100)
    remaining = [
        gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Remaining"] for _ in range(20)
    ]
    assert remaining == [str(n) for n in range(19, -1, -1)]
    denied = gateway.authorize(customer.raw_key, fmt="openai")
    wait = int(denied["headers"]["Retry-After"])
    assert_seconds_left(str(wait), minute_end())
    assert denied == {
        "allowed": False,
        "status": 429,
        "error": {
            "error": {
                "message": RATE_LIMITED_20_PER_MINUTE,
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
            }
        },
        "headers": {
            "X-RateLimit-Limit": "20",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(minute_end()),
            "x-ratelimit-limit-requests": "20",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait}s",
            "X-Credits-Remaining": "80",
            "Retry-After": str(wait),
        },
    }
    anthropic = gateway.authorize(customer.raw_key, fmt="anthropic")
    assert anthropic["error"] == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": RATE_LIMITED_20_PER_MINUTE,
        },
    }
    assert set(anthropic["headers"]) == (
        DOCUMENTED | ANTHROPIC_DIALECT | {"X-Credits-Remaining", "Retry-After"}
    )
    assert Hold.objects.count() == 20
    # Denials counted nothing: the next minute allows 20 again.
    start_of_next("minute")
    assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Remaining"] == "19"


def test_limits_are_per_key(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(100)
    for _ in range(20):
        assert gateway.authorize(customer.raw_key)["allowed"] is True
    assert gateway.authorize(customer.raw_key)["status"] == 429
    _, other = customer.new_key()
    assert gateway.authorize(other)["allowed"] is True


def test_the_hour_limit_is_reached_with_failure_settles_and_a_moving_clock(
    gateway: Gateway,
) -> None:
    start_of_next("hour")
    customer = funded_customer(100)
    for minute in range(30):
        for _ in range(20):
            decision = gateway.authorize(customer.raw_key)
            assert decision["allowed"] is True, (minute, decision)
            assert gateway.settle(_request_id_of(decision), "failure").status_code == 200
        clock.advance(timedelta(minutes=1))
    denied = gateway.authorize(customer.raw_key, fmt="openai")
    hour_end = int(clock.now().replace(minute=0, second=0, microsecond=0).timestamp()) + 3600
    assert denied["status"] == 429
    assert denied["error"]["error"]["message"] == (
        'Rate limit exceeded: 600 requests per hour on tier "1-100". A higher balance raises '
        'the limit: from 101 credits, tier "101-1,000" allows 2,000 requests per hour.'
    )
    assert denied["headers"]["X-RateLimit-Limit"] == "600"
    assert denied["headers"]["X-RateLimit-Remaining"] == "0"
    assert denied["headers"]["X-RateLimit-Reset"] == str(hour_end)
    assert_seconds_left(denied["headers"]["Retry-After"], hour_end)
    # 30 minutes of the fake clock have passed, plus however long 600 real pairs took (on a
    # loaded machine, more than a minute): the duration says what is left, as Retry-After does.
    reset = re.fullmatch(r"(\d+)m(\d+)s", denied["headers"]["x-ratelimit-reset-requests"])
    assert reset is not None, denied["headers"]
    assert_seconds_left(str(int(reset[1]) * 60 + int(reset[2])), hour_end)
    assert int(reset[1]) <= 29
    assert denied["headers"]["X-Credits-Remaining"] == "100"
    start_of_next("hour")
    assert gateway.authorize(customer.raw_key)["allowed"] is True
    assert reconcile() == []


def test_the_day_limit_is_reached_with_failure_settles_and_a_moving_clock(
    gateway: Gateway,
) -> None:
    # The documented day (5,000) takes 9 hours of 600; a staff-edited tier shows the same
    # mechanics in fewer requests: 3 a minute, 5 an hour, 8 a day.
    start_of_next("day")
    customer = funded_customer(100)
    Tier.objects.filter(name="1-100").update(
        requests_per_minute=3, requests_per_hour=5, requests_per_day=8
    )
    from credits.gateway.ratelimit import tiers_cache_clear

    tiers_cache_clear()
    allowed = 0
    refusals: list[str] = []
    for _ in range(6):  # six hours
        for _ in range(4):  # four minutes
            for _ in range(4):
                decision = gateway.authorize(customer.raw_key, fmt="anthropic")
                if decision["allowed"]:
                    allowed += 1
                    gateway.settle(_request_id_of(decision), "failure", reason="upstream_error")
                else:
                    refusals.append(decision["error"]["error"]["message"])
            clock.advance(timedelta(minutes=1))
        clock.advance(timedelta(hours=1))
    assert allowed == 8
    assert refusals[-1].startswith('Rate limit exceeded: 8 requests per day on tier "1-100".')
    assert any(r.startswith("Rate limit exceeded: 5 requests per hour on") for r in refusals)
    assert any(r.startswith("Rate limit exceeded: 3 requests per minute on") for r in refusals)
    denied = gateway.authorize(customer.raw_key, fmt="anthropic")
    day_end = (
        int(datetime.combine(clock.now().date(), datetime.min.time(), tzinfo=UTC).timestamp())
        + 86400
    )
    assert denied["headers"]["X-RateLimit-Reset"] == str(day_end)
    top = funded_customer(20_000)
    Tier.objects.filter(name="10,000+").update(requests_per_minute=2)
    tiers_cache_clear()
    assert [gateway.authorize(top.raw_key)["allowed"] for _ in range(2)] == [True, True]
    assert gateway.authorize(top.raw_key, fmt="anthropic")["error"]["error"]["message"] == (
        'Rate limit exceeded: 2 requests per minute on tier "10,000+". This is the highest tier.'
    )
    assert denied["headers"]["anthropic-ratelimit-requests-reset"] == datetime.fromtimestamp(
        day_end, tz=UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    start_of_next("day")
    assert gateway.authorize(customer.raw_key)["allowed"] is True


def test_the_headers_describe_the_window_with_the_fewest_remaining(gateway: Gateway) -> None:
    start_of_next("hour")
    customer = funded_customer(100)
    Tier.objects.filter(name="1-100").update(
        requests_per_minute=5, requests_per_hour=6, requests_per_day=100
    )
    from credits.gateway.ratelimit import tiers_cache_clear

    tiers_cache_clear()
    first = gateway.authorize(customer.raw_key)["headers"]
    # minute 5-1=4, hour 6-1=5: the minute has the fewest
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("5", "4")
    clock.advance(timedelta(minutes=1))
    second = gateway.authorize(customer.raw_key)["headers"]
    # minute 5-1=4, hour 6-2=4: a tie goes to the shorter window
    assert (second["X-RateLimit-Limit"], second["X-RateLimit-Remaining"]) == ("5", "4")
    third = gateway.authorize(customer.raw_key)["headers"]
    # minute 3, hour 3: tie again; then the hour falls below
    assert (third["X-RateLimit-Limit"], third["X-RateLimit-Remaining"]) == ("5", "3")
    clock.advance(timedelta(minutes=1))
    fourth = gateway.authorize(customer.raw_key)["headers"]
    # minute 4, hour 2: the hour
    assert (fourth["X-RateLimit-Limit"], fourth["X-RateLimit-Remaining"]) == ("6", "2")
    hour_end = int(clock.now().replace(minute=0, second=0, microsecond=0).timestamp()) + 3600
    assert fourth["X-RateLimit-Reset"] == str(hour_end)


def test_a_request_refused_for_credit_consumes_no_quota(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(1)
    held = gateway.authorize(customer.raw_key)
    for _ in range(30):
        assert gateway.authorize(customer.raw_key)["status"] == 403
    gateway.settle(_request_id_of(held), "failure")
    assert gateway.authorize(customer.raw_key)["headers"]["X-RateLimit-Remaining"] == "18"


# --- replays and conflicts --------------------------------------------------------------------


def test_a_retried_authorize_replays_the_decision_and_reserves_nothing(gateway: Gateway) -> None:
    start_of_next("minute")
    customer = funded_customer(10)
    first = gateway.authorize(customer.raw_key, "req_retry")
    again = gateway.authorize(customer.raw_key, "req_retry")
    assert again == first
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert account.reserved == 1
    # The replay counted nothing either: the next request sees 18 left, not 17.
    other = gateway.authorize(customer.raw_key)
    assert other["headers"]["X-RateLimit-Remaining"] == "18"
    # Whatever became of the hold since: committed, the decision is still replayed as it was.
    assert gateway.settle("req_retry").status_code == 200
    assert gateway.authorize(customer.raw_key, "req_retry") == first
    # ... and even after the key was revoked and the hold long expired.
    api_key_revoke(user=customer.user, key_id=customer.key.pk)
    clock.advance(timedelta(hours=1))
    assert gateway.authorize(customer.raw_key, "req_retry") == first
    assert reconcile() == []


def test_a_replayed_decision_survives_release_and_expiry(gateway: Gateway) -> None:
    customer = funded_customer(10)
    released = gateway.authorize(customer.raw_key, "req_released")
    gateway.settle("req_released", "failure")
    expired = gateway.authorize(customer.raw_key, "req_expired")
    clock.advance(timedelta(seconds=661))
    services.accounts_sweep()
    assert Hold.objects.get(request_id="req_expired").status == HoldStatus.EXPIRED
    assert gateway.authorize(customer.raw_key, "req_released") == released
    assert gateway.authorize(customer.raw_key, "req_expired") == expired
    assert reconcile() == []


def test_the_same_request_id_with_another_key_is_a_409_revealing_nothing(
    gateway: Gateway,
) -> None:
    alice = funded_customer(10)
    mallory = funded_customer(10)
    gateway.authorize(alice.raw_key, "req_shared")
    for key in (mallory.raw_key, alice.new_key()[1], "sk-kimi-garbage"):
        response = gateway.post(
            "authorize",
            {"api_key": key, "request_id": "req_shared", "model": "m", "format": "openai"},
        )
        assert response.status_code == 409
        assert response.json() == {
            "error": {
                "code": "request_id_conflict",
                "message": "This request_id was already used with another API key.",
                "field": "request_id",
            }
        }
    assert Hold.objects.count() == 1


def test_a_denied_request_id_is_decided_afresh_on_retry(gateway: Gateway) -> None:
    customer = funded_customer(0)
    assert gateway.authorize(customer.raw_key, "req_again")["status"] == 403
    services.credits_grant(
        user_id=customer.user.pk,
        amount=5,
        source="purchase",
        idempotency_key=f"grant:{uuid4()}",
    )
    assert gateway.authorize(customer.raw_key, "req_again")["allowed"] is True


# --- the HTTP errors of the internal API ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", None),
        ([], None),
        ({"api_key": "k", "model": "m", "format": "openai"}, "request_id"),
        ({"api_key": "k", "request_id": "", "model": "m", "format": "openai"}, "request_id"),
        ({"api_key": "k", "request_id": "r" * 129, "model": "m", "format": "openai"}, "request_id"),
        ({"api_key": "k", "request_id": 12, "model": "m", "format": "openai"}, "request_id"),
        # JSON can carry what PostgreSQL text cannot: a NUL and an unpaired surrogate.
        (
            {"api_key": "k", "request_id": "r\u0000x", "model": "m", "format": "openai"},
            "request_id",
        ),
        ({"api_key": "k", "request_id": "r\ud800", "model": "m", "format": "openai"}, "request_id"),
        ({"api_key": "k", "request_id": "r", "model": "m", "format": "xml"}, "format"),
        ({"api_key": "k", "request_id": "r", "model": "m"}, "format"),
        ({"api_key": 5, "request_id": "r", "model": "m", "format": "openai"}, "api_key"),
        ({"api_key": "k", "request_id": "r", "model": [], "format": "openai"}, "model"),
    ],
)
def test_a_malformed_authorize_body_is_a_400_naming_the_field(
    gateway: Gateway, body: object, field: str | None
) -> None:
    response = gateway.post("authorize", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error.get("field") == field
    assert not Hold.objects.exists()


@pytest.mark.parametrize("model", ["kimi\u0000k2", "kimi\ud800"])
def test_a_model_name_postgresql_cannot_store_is_no_reason_to_deny(
    gateway: Gateway, model: str
) -> None:
    customer = funded_customer(5)
    assert gateway.authorize(customer.raw_key, "r", model=model)["allowed"] is True


def test_a_request_id_of_128_characters_is_accepted(gateway: Gateway) -> None:
    customer = funded_customer(5)
    assert gateway.authorize(customer.raw_key, "r" * 128)["allowed"] is True


@pytest.mark.parametrize("path", ["authorize", "settle"])
def test_the_internal_api_refuses_a_missing_wrong_or_revoked_service_token(
    gateway: Gateway, path: str
) -> None:
    from accounts.models import ServiceToken
    from accounts.service_tokens import clear_cache

    customer = funded_customer(5)
    body = {"api_key": customer.raw_key, "request_id": "r1", "model": "m", "format": "openai"}
    expected = {
        "error": {
            "code": "invalid_service_token",
            "message": "A valid service token is required (Authorization: Bearer TOKEN).",
        }
    }
    for token in ("", "svc-wrong", customer.raw_key):
        response = gateway.post(path, body, token=token)
        assert response.status_code == 401
        assert response.json() == expected
    ServiceToken.objects.update(revoked_at=timezone.now())
    clear_cache()
    response = gateway.post(path, body)
    assert (response.status_code, response.json()) == (401, expected)
    assert not Hold.objects.exists()


def test_a_user_session_or_login_token_is_no_service_token(gateway: Gateway) -> None:
    customer = funded_customer(5)
    gateway.client.force_login(customer.user)
    response = gateway.client.post(
        "/internal/v1/authorize",
        data={"api_key": customer.raw_key, "request_id": "r", "format": "openai"},
        content_type="application/json",
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_service_token"


def test_only_post_is_allowed(gateway: Gateway) -> None:
    response = gateway.client.get(
        "/internal/v1/authorize", HTTP_AUTHORIZATION=f"Bearer {gateway.token}"
    )
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
