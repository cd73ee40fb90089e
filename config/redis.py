"""Redis for the process: a shared client, and a per-thread connection for the hot path.

Short timeouts: Redis sits on the hot path, and when it is away the callers fail open (rate
limits) rather than wait. A Redis that hangs (accepts, never answers) is worse than one that is
down: each call waits for its whole timeout. So every client here (the lanes, `get_redis()`, the
Django cache through `BreakerRedisCache`) goes through one circuit breaker per process: after
`BREAKER_FAILURES` timeouts or connection errors in a row it opens and every call fails at once
(callers fail open as before) for `BREAKER_COOLDOWN_SECONDS`; then one call is let through to
try, and its success closes the breaker.

`get_redis()` is redis-py's client with its connection pool: right for everything but the
limiter's one call per authorization. `redis_lane()` is one `redis.Connection` per thread,
used directly (send one command, read one reply): measured here at 88 us of client CPU per
EVALSHA against 163 us through the client (pool checkout and return, health check, retry
wrapper, `Script` lookup). A thread serves one request at a time, so its connection never has
two callers.
"""

import functools
import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

# The gateway's whole budget is 250 ms and a Redis round trip on the same network is well under
# 1 ms: 100 ms is a Redis that is not answering.
TIMEOUT_SECONDS = 0.1
BREAKER_FAILURES = 3
BREAKER_COOLDOWN_SECONDS = 5.0


class CircuitOpen(redis.ConnectionError):
    """Raised instead of calling Redis while the breaker is open (a `redis.RedisError`, so every
    caller's existing fail-open path handles it)."""


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures_to_open = failures
        self.cooldown = cooldown
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise `CircuitOpen` while open; after the cool-down, let one caller try."""
        if self._failures < self.failures_to_open:
            return
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                raise CircuitOpen("Redis circuit breaker is open")
            # Half-open: this caller tries; the others wait out another cool-down.
            self._open_until = now + self.cooldown

    def succeeded(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0
                self._open_until = 0.0

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.failures_to_open:
                self._open_until = time.monotonic() + self.cooldown

    @property
    def is_open(self) -> bool:
        return self._failures >= self.failures_to_open and time.monotonic() < self._open_until

    def reset(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0


breaker = CircuitBreaker(BREAKER_FAILURES, BREAKER_COOLDOWN_SECONDS)


class BreakerRedis(redis.Redis):
    """redis-py's client, every command through the process's breaker."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        breaker.check()
        try:
            result = super().execute_command(*args, **options)
        except (redis.ConnectionError, redis.TimeoutError):
            breaker.failed()
            raise
        breaker.succeeded()
        return result


class BreakerRedisCacheClient(RedisCacheClient):
    def __init__(self, servers: Any, **options: Any) -> None:
        # Short timeouts unless CACHES says otherwise: redis-py's default is to wait for ever.
        options.setdefault("socket_timeout", TIMEOUT_SECONDS)
        options.setdefault("socket_connect_timeout", TIMEOUT_SECONDS)
        super().__init__(servers, **options)
        self._client = BreakerRedis


class BreakerRedisCache(RedisCache):
    """Django's Redis cache with short timeouts and the breaker (the login throttles count
    here: a hung Redis held each login for 10 s)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = BreakerRedisCacheClient


@functools.cache
def get_redis() -> "redis.Redis[bytes]":
    client: redis.Redis[bytes] = BreakerRedis.from_url(
        settings.REDIS_URL,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=30,
    )
    return client


class RedisLane:
    """One connection, one caller at a time. Errors are redis-py's (`redis.RedisError`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        pool = redis.ConnectionPool.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
        self._connection = pool.make_connection()

    def call(self, *args: Any) -> Any:
        """Send one command and read its reply. A connection that went stale (Redis restarted)
        is reopened once; a Redis that is down raises after one connect timeout, one that hangs
        after one read timeout (never retried: a second wait would double the time the hot
        path loses), and while the breaker is open at once."""
        breaker.check()
        connection = self._connection
        for attempt in (1, 2):
            # `is_connected` is redis-py 8's; the installed stubs (types-redis) predate it.
            was_connected: bool = connection.is_connected  # type: ignore[attr-defined]
            try:
                connection.send_command(*args)
                reply = connection.read_response()
            except redis.TimeoutError:
                connection.disconnect()
                breaker.failed()
                raise
            except redis.ConnectionError:
                connection.disconnect()
                if attempt == 2 or not was_connected:
                    breaker.failed()
                    raise
            else:
                breaker.succeeded()
                return reply
        raise AssertionError("unreachable")

    def run_script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script the first time the server answers NOSCRIPT."""
        sha = script_sha(script)
        try:
            return self.call("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.call("SCRIPT", "LOAD", script)
            return self.call("EVALSHA", sha, len(keys), *keys, *args)


@functools.cache
def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


_lanes = threading.local()


def redis_lane() -> RedisLane:
    """This thread's lane to `settings.REDIS_URL` (a new one when the setting changed)."""
    lane: RedisLane | None = getattr(_lanes, "lane", None)
    if lane is None or lane.url != settings.REDIS_URL:
        lane = _lanes.lane = RedisLane(settings.REDIS_URL)
    return lane
