"""`GET /api/user/credits` against a hand-computed scenario (CONTRACT.md, "GET /api/user/credits").

Alice, at NOW = 2026-11-25T10:10:00Z, holds her untouched signup lot (100, never expires) and a
Standard lot (5,000, expires 2026-12-25T07:00:00Z). Her requests, oldest first (S = success,
F = failure; tokens prompt/completion):

    #7  2026-10-26T23:00:00  laptop  S  1000/1000   before the default 30-day window
    #8  2026-10-27T00:00:00  server  S     5/5      first day of the default window
    --  2026-11-20T08:00:00  laptop  a hold that expires unsettled: not a request
    #6  2026-11-23T10:59:59  laptop  S    40/60     in the days, one second before the 48 hours
    #1  2026-11-24T23:59:59  laptop  S   100/200    last second of the 24th
    #2  2026-11-25T00:00:00  laptop  S    10/20     first second of the 25th
    #3  2026-11-25T00:30:00  server  F     7/0      a request, not a credit; tokens not counted
    #4  2026-11-25T09:15:00  server  S    30/71
    #5  2026-11-25T09:45:00  laptop  F     0/0
    --  NOW                  laptop  a live hold: 1 credit reserved

Six charges (#7 #8 #6 #1 #2 #4), all from the Standard lot (it expires first): balance
5,100 - 6 = 5,094, reserved 1, available 5,093, consumed 6; the Standard lot shows 4,994
remaining (held credit included). Bob has requests at the same instants; none of them may show.
"""

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.models import User
from accounts.service_tokens import service_token_create
from accounts.services import api_key_revoke
from credits import clock, services
from credits.models import CreditAccount, Hold, LotSource
from tests.factories import registered_user

from .conftest import clock_at, new_key, settle, utc

pytestmark = pytest.mark.django_db

NOW = utc("2026-11-25T10:10:00")


class Scenario:
    alice: User
    bob: User
    laptop_id: str
    server_id: str
    laptop_raw: str
    bob_key_id: str
    bob_raw: str


@pytest.fixture
def scenario() -> Scenario:
    s = Scenario()
    clock_at(utc("2026-10-20T09:00:00"))
    s.alice = registered_user(email="alice@example.com")
    s.bob = registered_user(email="bob@example.com")
    services.credits_grant(
        user_id=s.alice.pk,
        amount=5000,
        source=LotSource.PURCHASE,
        package="standard",
        expires_at=utc("2026-12-25T07:00:00"),
        idempotency_key="test:alice-standard",
    )
    laptop, s.laptop_raw = new_key(s.alice, "laptop")
    server, _ = new_key(s.alice, "server")
    bob_key, s.bob_raw = new_key(s.bob, "bob")
    s.laptop_id, s.server_id, s.bob_key_id = str(laptop.pk), str(server.pk), str(bob_key.pk)

    def both(key: Any, rid: str, at: str, **kwargs: Any) -> None:
        settle(s.alice, key, f"alice-{rid}", at=utc(at), **kwargs)
        # Bob's twin request: every one charged, with tokens that would show if they leaked.
        settle(s.bob, bob_key, f"bob-{rid}", at=utc(at), prompt_tokens=9999, completion_tokens=1)

    both(laptop, "7", "2026-10-26T23:00:00", prompt_tokens=1000, completion_tokens=1000)
    both(server, "8", "2026-10-27T00:00:00", prompt_tokens=5, completion_tokens=5)
    clock_at(utc("2026-11-20T08:00:00"))
    services.hold_create(user_id=s.alice.pk, request_id="alice-abandoned", api_key_id=laptop.pk)
    both(laptop, "6", "2026-11-23T10:59:59", prompt_tokens=40, completion_tokens=60)
    both(laptop, "1", "2026-11-24T23:59:59", prompt_tokens=100, completion_tokens=200)
    both(laptop, "2", "2026-11-25T00:00:00", prompt_tokens=10, completion_tokens=20)
    both(
        server, "3", "2026-11-25T00:30:00", success=False, prompt_tokens=7, reason="upstream_error"
    )
    both(server, "4", "2026-11-25T09:15:00", prompt_tokens=30, completion_tokens=71)
    both(laptop, "5", "2026-11-25T09:45:00", success=False, reason="client_disconnected")
    clock_at(NOW)
    services.hold_create(user_id=s.alice.pk, request_id="alice-live", api_key_id=laptop.pk)
    return s


def _client(user: User) -> APIClient:
    client = APIClient()
    _, token = AuthToken.objects.create(user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def _get(user: User, query: str = "") -> Any:
    response = _client(user).get(f"/api/user/credits{query}")
    assert response.status_code == 200, response.content
    return response


def _day(date: str, requests: int, credits: int, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "date": date,
        "requests": requests,
        "credits": credits,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def _hour(hour: str, requests: int, credits: int, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "hour": hour,
        "requests": requests,
        "credits": credits,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


ALICE_ACCOUNT_WIDE = {
    "credits_remaining": 5093,
    "credits_reserved": 1,
    "total_credits_consumed": 6,
    "tier": {
        "name": "1,001-10,000",
        "requests_per_minute": 200,
        "requests_per_hour": 6000,
        "requests_per_day": 50000,
    },
    "lots": [
        {
            "source": "purchase",
            "package": "standard",
            "granted": 5000,
            "remaining": 4994,
            "expires_at": "2026-12-25T07:00:00Z",
        },
        {"source": "signup", "package": None, "granted": 100, "remaining": 100, "expires_at": None},
    ],
}


def test_every_number_matches_the_hand_computed_scenario(scenario: Scenario) -> None:
    response = _get(scenario.alice)
    assert response.json() == {
        **ALICE_ACCOUNT_WIDE,
        # The last 30 UTC days including today: 2026-10-27 .. 2026-11-25; empty days left out.
        "usage_by_day": [
            _day("2026-10-27", 1, 1, 5, 5),
            _day("2026-11-23", 1, 1, 40, 60),
            _day("2026-11-24", 1, 1, 100, 200),
            _day("2026-11-25", 4, 2, 10 + 30, 20 + 71),
        ],
        # The last 48 hours: 2026-11-23T11:00 .. 2026-11-25T10:59 (#6 at 10:59:59 is out).
        "usage_by_hour": [
            _hour("2026-11-24T23:00:00Z", 1, 1, 100, 200),
            _hour("2026-11-25T00:00:00Z", 2, 1, 10, 20),
            _hour("2026-11-25T09:00:00Z", 2, 1, 30, 71),
        ],
        # Charged requests in the 30 days: #8 #6 #1 #2 #4 = 5; tokens 10+100+300+30+101 = 541.
        "average_tokens_per_request": 108.2,
    }
    assert response["X-Credits-Remaining"] == "5093"


def test_the_key_filter_narrows_usage_and_average_but_nothing_account_wide(
    scenario: Scenario,
) -> None:
    body = _get(scenario.alice, f"?key={scenario.laptop_id}").json()
    assert {k: body[k] for k in ALICE_ACCOUNT_WIDE} == ALICE_ACCOUNT_WIDE
    assert body["usage_by_day"] == [
        _day("2026-11-23", 1, 1, 40, 60),
        _day("2026-11-24", 1, 1, 100, 200),
        _day("2026-11-25", 2, 1, 10, 20),
    ]
    assert body["usage_by_hour"] == [
        _hour("2026-11-24T23:00:00Z", 1, 1, 100, 200),
        _hour("2026-11-25T00:00:00Z", 1, 1, 10, 20),
        _hour("2026-11-25T09:00:00Z", 1, 0, 0, 0),
    ]
    assert body["average_tokens_per_request"] == round(430 / 3, 1) == 143.3


def test_from_a_date_covers_both_series_from_its_midnight_to_now(scenario: Scenario) -> None:
    body = _get(scenario.alice, "?from=2026-11-25").json()
    assert body["usage_by_day"] == [_day("2026-11-25", 4, 2, 40, 91)]
    assert body["usage_by_hour"] == [
        _hour("2026-11-25T00:00:00Z", 2, 1, 10, 20),
        _hour("2026-11-25T09:00:00Z", 2, 1, 30, 71),
    ]
    assert body["average_tokens_per_request"] == 65.5  # (30 + 101) / 2


def test_to_is_exclusive_at_midnight(scenario: Scenario) -> None:
    body = _get(scenario.alice, "?from=2026-11-24&to=2026-11-25").json()
    assert body["usage_by_day"] == [_day("2026-11-24", 1, 1, 100, 200)]
    assert body["usage_by_hour"] == [_hour("2026-11-24T23:00:00Z", 1, 1, 100, 200)]
    assert body["average_tokens_per_request"] == 300.0


def test_from_and_to_reach_outside_the_default_window(scenario: Scenario) -> None:
    body = _get(scenario.alice, "?from=2026-10-26&to=2026-10-27").json()
    assert body["usage_by_day"] == [_day("2026-10-26", 1, 1, 1000, 1000)]
    assert body["usage_by_hour"] == [_hour("2026-10-26T23:00:00Z", 1, 1, 1000, 1000)]
    assert body["average_tokens_per_request"] == 2000.0
    assert {k: body[k] for k in ALICE_ACCOUNT_WIDE} == ALICE_ACCOUNT_WIDE


def test_to_alone_covers_everything_before_it(scenario: Scenario) -> None:
    body = _get(scenario.alice, "?to=2026-11-24").json()
    assert [d["date"] for d in body["usage_by_day"]] == ["2026-10-26", "2026-10-27", "2026-11-23"]
    assert [h["hour"] for h in body["usage_by_hour"]] == [
        "2026-10-26T23:00:00Z",
        "2026-10-27T00:00:00Z",
        "2026-11-23T10:00:00Z",
    ]


def test_datetimes_in_utc_or_with_an_offset_bound_the_window_exactly(
    scenario: Scenario,
) -> None:
    exact = _get(scenario.alice, "?from=2026-11-25T00:00:00Z&to=2026-11-25T09:00:00Z").json()
    assert exact["usage_by_hour"] == [_hour("2026-11-25T00:00:00Z", 2, 1, 10, 20)]
    # 01:00 at +01:00 is 00:00 UTC; a naive datetime is UTC.
    offset = _get(scenario.alice, "?from=2026-11-25T01:00:00%2B01:00&to=2026-11-25T09:00:00")
    assert offset.json()["usage_by_hour"] == exact["usage_by_hour"]
    # Inside an hour too: [00:30, 00:31) holds #3 only, not #2 at 00:00.
    inside = _get(scenario.alice, "?from=2026-11-25T00:30:00Z&to=2026-11-25T00:31:00Z").json()
    assert inside["usage_by_hour"] == [_hour("2026-11-25T00:00:00Z", 1, 0, 0, 0)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?from=yesterday", "from"),
        ("?to=2026-13-01", "to"),
        ("?from=2026-11-25T10:00:00Z&to=2026-11-25T10:00:00Z", "to"),
        ("?from=2026-11-26&to=2026-11-25", "to"),
    ],
)
def test_a_bad_window_is_a_400_naming_the_parameter(
    scenario: Scenario, query: str, field: str
) -> None:
    response = _client(scenario.alice).get(f"/api/user/credits{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize("which", ["bob", "unknown", "malformed"])
def test_a_key_that_is_not_the_users_own_is_a_404_that_reveals_nothing(
    scenario: Scenario, which: str
) -> None:
    key = {
        "bob": scenario.bob_key_id,
        "unknown": "00000000-0000-4000-8000-000000000000",
        "malformed": "laptop",
    }[which]
    response = _client(scenario.alice).get(f"/api/user/credits?key={key}")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "key_not_found",
            "message": "No API key of yours has this id.",
            "field": "key",
        }
    }


def test_a_revoked_key_keeps_its_history(scenario: Scenario) -> None:
    api_key_revoke(user=scenario.alice, key_id=scenario.server_id)
    body = _get(scenario.alice, f"?key={scenario.server_id}").json()
    assert body["usage_by_day"] == [
        _day("2026-10-27", 1, 1, 5, 5),
        _day("2026-11-25", 2, 1, 30, 71),
    ]


def test_another_users_report_holds_only_their_own_usage(scenario: Scenario) -> None:
    body = _get(scenario.bob).json()
    assert body["credits_remaining"] == 100 - 8
    assert body["total_credits_consumed"] == 8
    assert body["tier"]["name"] == "1-100"
    assert body["usage_by_day"] == [
        _day("2026-10-27", 1, 1, 9999, 1),
        _day("2026-11-23", 1, 1, 9999, 1),
        _day("2026-11-24", 1, 1, 9999, 1),
        _day("2026-11-25", 4, 4, 4 * 9999, 4),
    ]
    assert body["average_tokens_per_request"] == 10000.0


def test_a_user_without_usage_or_credit_has_no_tier_and_no_average() -> None:
    user = registered_user()
    services.credits_adjust(user_id=user.pk, amount=-100, reason="test", idempotency_key="t:0")
    assert _get(user).json() == {
        "credits_remaining": 0,
        "credits_reserved": 0,
        "total_credits_consumed": 0,
        "tier": None,
        "lots": [],
        "usage_by_day": [],
        "usage_by_hour": [],
        "average_tokens_per_request": None,
    }


def test_failures_alone_count_as_requests_with_no_average() -> None:
    user = registered_user()
    settle(user, None, "f1", at=clock.now(), success=False, prompt_tokens=5)
    body = _get(user).json()
    assert [(d["requests"], d["credits"], d["prompt_tokens"]) for d in body["usage_by_day"]] == [
        (1, 0, 0)
    ]
    assert body["average_tokens_per_request"] is None
    assert body["total_credits_consumed"] == 0


def test_a_settled_request_shows_at_once(scenario: Scenario) -> None:
    before = _get(scenario.alice).json()["usage_by_hour"][-1]
    settle(scenario.alice, None, "alice-now", at=NOW, prompt_tokens=1, completion_tokens=1)
    after = _get(scenario.alice).json()["usage_by_hour"][-1]
    assert before["hour"] == "2026-11-25T09:00:00Z"
    assert after == _hour("2026-11-25T10:00:00Z", 1, 1, 1, 1)


def test_an_expired_lot_is_left_out_and_the_read_writes_nothing(scenario: Scenario) -> None:
    clock_at(utc("2026-12-25T07:00:00"))  # the Standard lot's expiry instant
    body = _get(scenario.alice).json()
    assert body["lots"] == [ALICE_ACCOUNT_WIDE["lots"][1]]  # type: ignore[index]
    assert body["credits_remaining"] == 100
    assert body["credits_reserved"] == 0  # the live hold expired long ago
    assert CreditAccount.objects.get(pk=scenario.alice.pk).balance == 5094  # nothing written


# --- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["HTTP_AUTHORIZATION", "HTTP_X_API_KEY"])
def test_the_users_own_api_key_is_accepted_at_no_cost(scenario: Scenario, header: str) -> None:
    value = (
        f"Bearer {scenario.laptop_raw}" if header == "HTTP_AUTHORIZATION" else scenario.laptop_raw
    )
    credentials: dict[str, Any] = {header: value}
    expected = _get(scenario.alice).json()
    holds = Hold.objects.count()
    for _ in range(25):  # more than any tier's per-minute limit would allow for requests
        response = Client(**credentials).get("/api/user/credits")
        assert response.status_code == 200
        assert response.json() == expected
    account = CreditAccount.objects.get(pk=scenario.alice.pk)
    assert (account.balance, account.reserved, account.consumed) == (5094, 1, 6)
    assert Hold.objects.count() == holds


def test_the_rate_limit_quota_of_the_key_is_untouched(scenario: Scenario) -> None:
    from credits.gateway.ratelimit import limiter_peek, tier_for_balance

    tier = tier_for_balance(5094)
    assert tier is not None
    before = limiter_peek(key_id=scenario.laptop_id, tier=tier, now=clock.now())
    response = Client().get("/api/user/credits", HTTP_X_API_KEY=scenario.laptop_raw)
    assert response.status_code == 200
    after = limiter_peek(key_id=scenario.laptop_id, tier=tier, now=clock.now())
    assert [w.count for w in after.windows] == [w.count for w in before.windows]


def test_a_key_sees_its_owners_account_only(scenario: Scenario) -> None:
    response = Client().get("/api/user/credits", HTTP_AUTHORIZATION=f"Bearer {scenario.bob_raw}")
    assert response.status_code == 200
    assert response.json()["total_credits_consumed"] == 8
    assert response["X-Credits-Remaining"] == "92"


def test_the_session_cookie_is_accepted(scenario: Scenario) -> None:
    client = Client()
    client.force_login(scenario.alice)
    response = client.get("/api/user/credits")
    assert response.status_code == 200
    assert response.json()["credits_remaining"] == 5093


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Bearer sk-kimi-not-a-real-key"},
        {"HTTP_X_API_KEY": "sk-kimi-not-a-real-key"},
        {"HTTP_AUTHORIZATION": "Token not-a-token"},
    ],
)
def test_missing_or_bad_credentials_are_a_401(scenario: Scenario, headers: dict[str, str]) -> None:
    response = Client().get("/api/user/credits", **headers)  # type: ignore[arg-type]
    assert response.status_code == 401
    assert "error" in response.json()
    assert "X-Credits-Remaining" not in response


def test_a_revoked_key_is_refused(scenario: Scenario) -> None:
    api_key_revoke(user=scenario.alice, key_id=scenario.laptop_id)
    response = Client().get("/api/user/credits", HTTP_X_API_KEY=scenario.laptop_raw)
    assert response.status_code == 401


def test_a_service_token_is_refused_on_the_user_api(scenario: Scenario) -> None:
    _, raw = service_token_create(name="gateway")
    response = Client().get("/api/user/credits", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401


def test_the_api_key_is_accepted_on_this_endpoint_only(scenario: Scenario) -> None:
    response = Client().get("/api/user/ledger", HTTP_AUTHORIZATION=f"Bearer {scenario.laptop_raw}")
    assert response.status_code == 401


def test_the_default_windows_follow_the_clock(scenario: Scenario) -> None:
    clock_at(NOW + timedelta(days=1))
    body = _get(scenario.alice).json()
    assert [d["date"] for d in body["usage_by_day"]] == ["2026-11-23", "2026-11-24", "2026-11-25"]
    # The 48 hours now start at 2026-11-24T11:00.
    assert [h["hour"] for h in body["usage_by_hour"]] == [
        "2026-11-24T23:00:00Z",
        "2026-11-25T00:00:00Z",
        "2026-11-25T09:00:00Z",
    ]


@pytest.mark.parametrize(
    ("tokens", "credits", "expected"),
    [(541, 5, 108.2), (1, 4, 0.3), (2, 3, 0.7), (10, 3, 3.3), (0, 2, 0.0), (5, 0, None)],
)
def test_the_average_has_one_decimal_with_halves_rounded_up(
    tokens: int, credits: int, expected: float | None
) -> None:
    from credits.usage.selectors import UsageTotals, average_tokens

    assert average_tokens(UsageTotals(credits, credits, tokens, 0)) == expected


def test_the_body_has_exactly_the_shape_the_schema_documents(scenario: Scenario) -> None:
    from credits.usage.serializers import (
        CreditsOutputSerializer,
        LotSerializer,
        TierSerializer,
        UsageDaySerializer,
        UsageHourSerializer,
    )

    body = _get(scenario.alice).json()
    serializer = CreditsOutputSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert set(body) == set(CreditsOutputSerializer().fields)
    assert set(body["tier"]) == set(TierSerializer().fields)
    assert all(set(lot) == set(LotSerializer().fields) for lot in body["lots"])
    assert all(set(d) == set(UsageDaySerializer().fields) for d in body["usage_by_day"])
    assert all(set(h) == set(UsageHourSerializer().fields) for h in body["usage_by_hour"])


def test_the_openapi_document_describes_both_endpoints() -> None:
    schema = Client().get("/api/schema/").json()
    credits = schema["paths"]["/api/user/credits"]["get"]
    assert {p["name"] for p in credits["parameters"]} >= {"from", "to", "key"}
    assert {"200", "400", "401", "404"} <= set(credits["responses"])
    ledger = schema["paths"]["/api/user/ledger"]["get"]
    assert {p["name"] for p in ledger["parameters"]} >= {"kind", "cursor", "limit"}
