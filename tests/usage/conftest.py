"""Helpers for the usage tests: a clock set to an exact instant, API keys, and settled requests
written the way the gateway's settle writes them (the money through `credits.services`, then one
plain single-row INSERT of the `UsageRecord`, in one transaction)."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.core.cache import cache
from django.db import transaction

from accounts.models import ApiKey, User
from accounts.services import api_key_create
from credits import clock, services
from credits.gateway.models import UsageRecord
from credits.gateway.ratelimit import tiers_cache_clear
from tests.factories import ensure_documented_tiers


@pytest.fixture(autouse=True)
def _fresh_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """The documented tiers present (a transactional test's flush removes the migration's
    seed) and no cached copy of other ones; the login throttle and the rate limiter's
    counters (in the shared cache) emptied."""
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        transactional = marker.kwargs.get("transaction", False)
        request.getfixturevalue("transactional_db" if transactional else "db")
        ensure_documented_tiers()
    tiers_cache_clear()
    cache.clear()
    yield
    clock.now = _REAL_NOW
    tiers_cache_clear()
    cache.clear()


def utc(text: str) -> datetime:
    """`utc("2026-11-25T10:10:00")`: an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


_REAL_NOW = clock.now


def clock_at(moment: datetime) -> None:
    """Stop the ledger's clock at `moment`: every `clock.now()` answers exactly that until the
    next call (or the test's end), so a request placed at 23:59:59 cannot slip into the next
    hour on a slow machine. Everything reads the time through `clock.now()`."""
    clock.now = lambda: moment


def new_key(user: User, name: str = "laptop") -> tuple[ApiKey, str]:
    return api_key_create(user=user, name=name)


def settle(
    user: User,
    key: ApiKey | None,
    request_id: str,
    *,
    at: datetime,
    success: bool = True,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    model: str = "kimi-k2-0905",
    reason: str = "",
    http_status: int | None = None,
) -> UsageRecord:
    """One end-user request, authorized and settled at `at` (the clock is moved there): a hold,
    its commit or release, and the usage record, exactly as the gateway's settle writes it."""
    clock_at(at)
    services.hold_create(user_id=user.pk, request_id=request_id, api_key_id=key.pk if key else None)
    with transaction.atomic():
        if success:
            result = services.hold_commit(request_id=request_id)
        else:
            result = services.hold_release(request_id=request_id)
        return UsageRecord.objects.create(
            request_id=request_id,
            account_id=user.pk,
            api_key_id=key.pk if key else None,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            outcome="success" if success else "failure",
            reason=reason,
            http_status=http_status if http_status is not None else (200 if success else 502),
            charged=result.hold.charged,
            settled_at=result.hold.settled_at or at,
        )


def record(
    user: User,
    key: ApiKey | None,
    request_id: str,
    *,
    at: datetime,
    charged: int = 1,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    model: str = "kimi-k2-0905",
) -> UsageRecord:
    """Only the usage record, with an exact `settled_at` (for bucket edges to the microsecond):
    the same single-row INSERT the settle makes, without the money."""
    return UsageRecord.objects.create(
        request_id=request_id,
        account_id=user.pk,
        api_key_id=key.pk if key else None,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        outcome="success" if charged else "failure",
        reason="" if charged else "upstream_error",
        http_status=200 if charged else 502,
        charged=charged,
        settled_at=at,
    )
