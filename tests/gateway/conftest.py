"""Helpers for the gateway tests: a service token, funded users with keys, calls of the two
endpoints, and a clock placed at the start of a window (so a test never straddles a reset)."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import uuid4

import pytest
from django.db import connection
from django.test import Client

from accounts.models import ApiKey, User
from accounts.service_tokens import clear_cache, service_token_create
from accounts.services import api_key_create
from credits import clock, services
from credits.gateway import backends
from credits.gateway.ratelimit import local_limiter, tiers_cache_clear
from credits.gateway.views import seen_cache_clear
from credits.models import LotSource
from tests.factories import UserFactory, ensure_documented_tiers

# The 429 names the tier and what raises its limit (the next tier of the documented ones).
RATE_LIMITED_20_PER_MINUTE = (
    'Rate limit exceeded: 20 requests per minute on tier "1-100". A higher balance raises the '
    'limit: from 101 credits, tier "101-1,000" allows 60 requests per minute.'
)


@dataclass
class Customer:
    user: User
    key: ApiKey
    raw_key: str

    def new_key(self, **kwargs: Any) -> tuple[ApiKey, str]:
        return api_key_create(user=self.user, name=f"key {uuid4().hex[:6]}", **kwargs)


def funded_customer(
    balance: int, *, expires_at: datetime | None = None, key_expires_at: datetime | None = None
) -> Customer:
    """A user whose account holds exactly `balance` credits (one lot), with one API key."""
    ensure_documented_tiers()
    user = cast(User, UserFactory())
    services.account_open(user_id=user.pk)
    if balance:
        services.credits_grant(
            user_id=user.pk,
            amount=balance,
            source=LotSource.PURCHASE,
            expires_at=expires_at,
            idempotency_key=f"test-grant:{uuid4()}",
        )
    key, raw = api_key_create(user=user, name="main", expires_at=key_expires_at)
    return Customer(user, key, raw)


class Gateway:
    """Calls `/internal/v1/` the way the gateway does."""

    def __init__(self, token: str, client: Client | None = None) -> None:
        self.token = token
        self.client = client or Client()

    def post(self, path: str, body: Any, token: str | None = None) -> Any:
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.post(
            f"/internal/v1/{path}",
            data=raw,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token if token is not None else self.token}",
        )

    def authorize(
        self,
        api_key: str,
        request_id: str | None = None,
        fmt: str = "openai",
        model: str = "kimi-k2-0905",
    ) -> dict[str, Any]:
        response = self.post(
            "authorize",
            {
                "api_key": api_key,
                "request_id": request_id or f"req_{uuid4().hex}",
                "model": model,
                "format": fmt,
            },
        )
        assert response.status_code == 200, response.content
        body: dict[str, Any] = response.json()
        return body

    def settle(
        self,
        request_id: str,
        outcome: str = "success",
        *,
        http_status: int | None = None,
        usage: dict[str, int] | None = None,
        reason: str | None = None,
        model: str = "kimi-k2-0905",
    ) -> Any:
        if http_status is None:
            http_status = 200 if outcome == "success" else 502
        return self.post(
            "settle",
            {
                "request_id": request_id,
                "outcome": outcome,
                "http_status": http_status,
                "model": model,
                "usage": usage
                if usage is not None
                else {"prompt_tokens": 25, "completion_tokens": 189},
                "reason": reason,
            },
        )


@pytest.fixture(params=["sql", "services"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test against both implementations of the database side."""
    backends.FORCE = request.param
    yield request.param
    backends.FORCE = None


@pytest.fixture
def service_token() -> str:
    clear_cache()
    _, raw = service_token_create(name=f"gateway-{uuid4().hex[:8]}")
    return raw


@pytest.fixture
def gateway(service_token: str) -> Gateway:
    return Gateway(service_token)


@pytest.fixture(autouse=True)
def _fresh_limiter() -> Iterator[None]:
    local_limiter.clear()
    tiers_cache_clear()
    seen_cache_clear()
    yield
    local_limiter.clear()
    tiers_cache_clear()
    seen_cache_clear()


def start_of_next(window: str) -> None:
    """Move the clock to one second past the start of the next minute, hour or day (UTC)."""
    now = clock.now()
    if window == "minute":
        start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    elif window == "hour":
        start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:
        start = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    clock.advance(start + timedelta(seconds=1) - now)


@contextmanager
def gateway_calls() -> Iterator[list[str]]:
    """The `gateway_*` SQL functions called meanwhile, in order."""
    called: list[str] = []

    def record(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if "gateway_" in sql:
            called.append(sql.split("FROM ", 1)[1].split("(", 1)[0])
        return execute(sql, *args)

    with connection.execute_wrapper(record):
        yield called
