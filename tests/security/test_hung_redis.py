"""A Redis that hangs (accepts connections, never answers: a real redis-server stopped with
SIGSTOP) must not stall the hot path, logins or anything waiting on the broker (issue 15,
item 5): short socket timeouts on every client, a circuit breaker that stops trying for a
while, and task publishing off the request's thread."""

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.test import Client, override_settings

from config import broker
from config.redis import BREAKER_FAILURES, RedisLane, breaker, get_redis
from tests.processes import free_port

from .conftest import Person

BUDGET = 0.25  # the gateway's time budget for authorize (CONTRACT.md)


@pytest.fixture
def hung_redis(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, then frozen (SIGSTOP): connections are
    accepted by the kernel and never answered. Thawed and stopped at the end."""
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_timeout=0.5).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        os.kill(server.pid, signal.SIGSTOP)
        get_redis.cache_clear()
        yield url
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)
        get_redis.cache_clear()


def test_a_hung_redis_costs_one_short_timeout_then_the_breaker_answers_at_once(
    hung_redis: str,
) -> None:
    lane = RedisLane(hung_redis)
    waits = []
    for _ in range(BREAKER_FAILURES + 3):
        started = time.monotonic()
        with pytest.raises(redis.RedisError):
            lane.call("PING")
        waits.append(time.monotonic() - started)

    assert max(waits) < 0.2, waits  # one read timeout each, never a retry on top
    assert breaker.is_open
    assert max(waits[BREAKER_FAILURES:]) < 0.01, waits  # open: no call reaches Redis


def _pair(gateway: Client, person: Person, request_id: str) -> None:
    allowed = gateway.post(
        "/internal/v1/authorize",
        {"api_key": person.raw_key, "request_id": request_id, "model": "m", "format": "openai"},
        content_type="application/json",
    )
    assert allowed.json()["allowed"] is True  # the limiter fails open
    settled = gateway.post(
        "/internal/v1/settle",
        {
            "request_id": request_id,
            "outcome": "success",
            "http_status": 200,
            "model": "m",
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        },
        content_type="application/json",
    )
    assert settled.json()["charged"] == 1


@pytest.mark.django_db
def test_authorize_and_settle_stay_within_the_gateway_budget_while_redis_hangs(
    alice: Person, service_token: str, hung_redis: str
) -> None:
    gateway = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}")
    slowest = 0.0
    # One pair with Redis up first: the first call of a process imports and warms up.
    _pair(gateway, alice, "warm-up")
    with override_settings(REDIS_URL=hung_redis):
        for n in range(8):
            started = time.monotonic()
            _pair(gateway, alice, f"r{n}")
            slowest = max(slowest, time.monotonic() - started)
    assert slowest < BUDGET, f"slowest authorize+settle took {slowest * 1000:.0f} ms"


@pytest.mark.django_db
def test_a_login_answers_promptly_while_the_cache_redis_hangs(
    alice: Person, hung_redis: str
) -> None:
    caches = {"default": {"BACKEND": "config.redis.BreakerRedisCache", "LOCATION": hung_redis}}
    answers: list[int] = []

    def login() -> None:
        response = Client().post(
            "/api/auth/login",
            {"email": alice.user.email, "password": "correct horse battery staple"},
            content_type="application/json",
        )
        answers.append(response.status_code)

    with override_settings(CACHES=caches):
        started = time.monotonic()
        login()  # in this thread: the test's transaction holds alice
        first = time.monotonic() - started
        started = time.monotonic()
        login()
        second = time.monotonic() - started

    assert answers == [200, 200]
    assert first < 1.0, f"login took {first:.1f} s"
    # PBKDF2 alone takes about 0.1 s here: no Redis wait on top.
    assert second < 0.5, f"login took {second:.2f} s with the breaker open"


def test_publishing_a_task_never_waits_on_a_hung_broker(hung_redis: str) -> None:
    app = Celery("hung-broker-test", broker=hung_redis, set_as_current=False)
    app.conf.broker_transport_options = {"socket_timeout": 2, "socket_connect_timeout": 2}

    @app.task(name="hung_broker_test.noop")
    def noop() -> None:
        return None

    with override_settings(CELERY_TASK_ALWAYS_EAGER=False):
        started = time.monotonic()
        broker.publish_soon(noop)
        returned_after = time.monotonic() - started

        # What a request did before: `.delay()` in its own thread, stuck on the broker.
        def publish_directly() -> None:
            # It fails once the fixture stops the server; only its blocking matters here.
            with contextlib.suppress(Exception):
                noop.apply_async(retry=False)

        direct = threading.Thread(target=publish_directly, daemon=True)
        direct.start()
        direct.join(timeout=1.0)

    assert returned_after < BUDGET, f"publish_soon took {returned_after * 1000:.0f} ms"
    assert direct.is_alive(), "a direct publish to a hung broker should block"
