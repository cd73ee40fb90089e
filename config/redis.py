"""One Redis client per process, shared by the rate limiter and the caches that need it.

Short timeouts: Redis sits on the hot path, and when it is away the callers fail open (rate
limits) rather than wait."""

import functools

import redis
from django.conf import settings


@functools.cache
def get_redis() -> "redis.Redis[bytes]":
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        health_check_interval=30,
    )
