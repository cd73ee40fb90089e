"""With Redis unreachable, logging in, the user API and the hot path still answer (never a
500); only `/healthz` (503) and `/readyz` (200 `degraded`) report the outage. bench/faults.py
shows the same under load."""

from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from accounts import throttles
from config.redis import get_redis

from .conftest import Person

pytestmark = pytest.mark.django_db

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def redis_down() -> Iterator[None]:
    with override_settings(
        REDIS_URL=DEAD_REDIS,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": DEAD_REDIS,
            }
        },
    ):
        # Django's test signals rebuild the cache handlers for the new CACHES.
        get_redis.cache_clear()
        throttles._FALLBACK_CACHE.clear()
        yield
    get_redis.cache_clear()


def test_login_answers_without_redis(alice: Person, redis_down: None) -> None:
    response = Client().post(
        "/api/auth/login",
        {"email": "alice@example.com", "password": "correct horse battery staple"},
        content_type="application/json",
    )
    assert response.status_code < 500, response.content


def test_authorize_answers_without_redis(
    alice: Person, service_token: str, redis_down: None
) -> None:
    response = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}").post(
        "/internal/v1/authorize",
        {"api_key": alice.raw_key, "request_id": "r-1", "model": "m", "format": "openai"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["allowed"] is True


def test_the_user_api_answers_without_redis(alice: Person, redis_down: None) -> None:
    assert alice.client().get("/api/user/credits").status_code == 200
    assert Client(HTTP_X_API_KEY=alice.raw_key).get("/api/user/credits").status_code == 200


def test_healthz_reports_redis_down(redis_down: None) -> None:
    # The contract's /healthz is 503; readiness is degraded, not unavailable: the service
    # works without Redis (issue 15, item 6).
    assert Client().get("/healthz").status_code == 503
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["redis"] == "unreachable"


def test_login_is_still_throttled_without_redis(alice: Person, redis_down: None) -> None:
    client = Client(REMOTE_ADDR="192.0.2.44")
    statuses = [
        client.post(
            "/api/auth/login",
            {"email": "alice@example.com", "password": "wrong password"},
            content_type="application/json",
        ).status_code
        for _ in range(11)
    ]
    assert statuses == [400] * 10 + [429]
