import logging
from hashlib import sha256
from typing import Any

import redis
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from .models import normalize_email

logger = logging.getLogger(__name__)

# Where the counts go while Redis is unreachable: per process, so still a brake on guessing.
_FALLBACK_CACHE = LocMemCache("login-throttle-fallback", {})


class _SurvivesRedisOutage(SimpleRateThrottle):
    """Counting in Redis must not turn a Redis outage into a 500 on every login: the counts
    move to this process's memory until Redis answers again."""

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except redis.RedisError:
            logger.warning("login throttle: Redis unreachable, counting in this process")
            self.cache = _FALLBACK_CACHE
            return super().allow_request(request, view)


class LoginThrottle(_SurvivesRedisOutage):
    """Login attempts per client address and email (rate `login` in REST_FRAMEWORK's
    DEFAULT_THROTTLE_RATES, 10/min). Counted in the default cache, which is Redis when
    REDIS_URL is set, so every worker shares the count; the embedded default counts per
    process. Keyed on the pair so one attacker cannot lock a victim out from elsewhere, and
    a shared NAT address does not lock out everyone behind it."""

    scope = "login"

    def get_cache_key(self, request: Request, view: Any) -> str:
        email = _email(request)
        # Hashed: the cache holds no email addresses.
        ident = sha256(_utf8(f"{self.get_ident(request)}|{email}")).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginEmailThrottle(_SurvivesRedisOutage):
    """A looser cap per email alone: client addresses come from X-Forwarded-For behind the
    load balancer, which a client can vary, so the pair above alone would not stop a
    password-guessing run against one account."""

    scope = "login_email"
    rate = "30/min"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        email = _email(request)
        if not email:
            return None
        ident = sha256(_utf8(email)).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


def _email(request: Request) -> str:
    """The address as login looks it up (`normalize_email`), so every spelling of one account
    shares its count and no other account's."""
    data = request.data if isinstance(request.data, dict) else {}
    return normalize_email(str(data.get("email") or ""))


def _utf8(text: str) -> bytes:
    """Throttles run before the serializer refuses a lone surrogate (400): encoded here so such
    a body is still counted, under a key of its own, rather than a 500."""
    return text.encode("utf-8", "surrogatepass")
