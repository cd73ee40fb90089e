"""End to end through the gateway's internal API: what `POST /internal/v1/settle` records shows
in `GET /api/user/credits` at once, counted once however often the gateway retries."""

from typing import Any

import pytest
from django.test import Client

from accounts.service_tokens import service_token_create
from credits.gateway.models import UsageBucket
from tests.factories import registered_user

from .conftest import clock_at, new_key, utc

pytestmark = pytest.mark.django_db


def _post(client: Client, token: str, path: str, body: dict[str, Any]) -> Any:
    response = client.post(
        f"/internal/v1/{path}",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    return response


def test_settled_requests_show_at_once_and_retries_count_once() -> None:
    clock_at(utc("2026-11-25T10:10:00"))
    user = registered_user()
    key, raw = new_key(user)
    _, token = service_token_create(name="gateway")
    gateway = Client()

    def request(rid: str, outcome: str, usage: dict[str, int] | None, status: int) -> None:
        allowed = _post(
            gateway,
            token,
            "authorize",
            {
                "api_key": raw,
                "request_id": rid,
                "model": "kimi-k2-0905",
                "format": "openai",
            },
        )
        assert allowed.status_code == 200 and allowed.json()["allowed"] is True, allowed.content
        body = {
            "request_id": rid,
            "outcome": outcome,
            "http_status": status,
            "model": "kimi-k2-0905",
            "reason": None if outcome == "success" else "timeout",
        }
        if usage is not None:
            body["usage"] = usage
        for _ in range(2):  # the gateway retries a settle whose answer it did not get
            settled = _post(gateway, token, "settle", body)
            assert settled.status_code == 200, settled.content

    request("gw-1", "success", {"prompt_tokens": 25, "completion_tokens": 189}, 200)
    request("gw-2", "failure", {"prompt_tokens": 25, "completion_tokens": 3}, 504)
    request("gw-3", "success", {"prompt_tokens": 11, "completion_tokens": 0}, 200)
    # A denial (a key that does not exist) is not a request.
    denied = _post(
        gateway,
        token,
        "authorize",
        {
            "api_key": raw[:-1] + ("A" if raw[-1] != "A" else "B"),
            "request_id": "gw-4",
            "model": "kimi-k2-0905",
            "format": "openai",
        },
    )
    assert denied.json()["allowed"] is False

    response = Client().get("/api/user/credits", HTTP_X_API_KEY=raw)
    assert response.status_code == 200
    body = response.json()
    totals = {"requests": 3, "credits": 2, "prompt_tokens": 36, "completion_tokens": 189}
    assert body["usage_by_day"] == [{"date": "2026-11-25", **totals}]
    assert body["usage_by_hour"] == [{"hour": "2026-11-25T10:00:00Z", **totals}]
    assert body["average_tokens_per_request"] == 112.5  # (36 + 189) / 2
    assert body["credits_remaining"] == 98
    assert body["total_credits_consumed"] == 2
    assert response["X-Credits-Remaining"] == "98"
    assert UsageBucket.objects.filter(account_id=user.pk, api_key_id=key.pk).count() == 1
