"""Redis for the process: a shared client, and a per-thread connection for the hot path.

Short timeouts: Redis sits on the hot path, and when it is away the callers fail open (rate
limits) rather than wait.

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
from collections.abc import Sequence
from typing import Any

import redis
from django.conf import settings

TIMEOUT_SECONDS = 0.25


@functools.cache
def get_redis() -> "redis.Redis[bytes]":
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=30,
    )


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
        is reopened once; a Redis that is down raises after one connect timeout."""
        connection = self._connection
        for attempt in (1, 2):
            # `is_connected` is redis-py 8's; the installed stubs (types-redis) predate it.
            was_connected: bool = connection.is_connected  # type: ignore[attr-defined]
            try:
                connection.send_command(*args)
                return connection.read_response()
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                if attempt == 2 or not was_connected:
                    raise
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
