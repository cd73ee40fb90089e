import logging
from hashlib import sha256
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from config.client_address import client_address

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

    def get_ident(self, request: Request) -> str:
        # DRF's own reads X-Forwarded-For under NUM_PROXIES; ours honours TRUSTED_PROXY_COUNT,
        # the one setting every client-address limit reads.
        return client_address(request._request)


class _PerClientAddress(_SurvivesRedisOutage):
    """Counted per client address alone, whatever the body says."""

    def get_cache_key(self, request: Request, view: Any) -> str:
        ident = sha256(_utf8(self.get_ident(request))).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class _PerEmail(_SurvivesRedisOutage):
    """Counted per email of the body (as login looks it up), from any address."""

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        email = _email(request)
        if not email:
            return None
        ident = sha256(_utf8(email)).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


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


class LoginEmailThrottle(_PerEmail):
    """A looser cap per email alone (`login_email`, 30/min): an attacker with many addresses
    (a botnet) would get past the pair above; this stops a password-guessing run against one
    account from anywhere."""

    scope = "login_email"


class LoginClientThrottle(_PerClientAddress):
    """Login attempts per client address across every email (`login_client`, 20/min): password
    spraying (one password tried on many accounts) changes the email each time, so neither
    throttle above counts it."""

    scope = "login_client"


class PasswordResetClientThrottle(_PerClientAddress):
    """Reset requests and confirmations per client address (`password_reset`)."""

    scope = "password_reset"


class PasswordResetEmailThrottle(_PerEmail):
    """Reset requests per email (`password_reset_email`): nobody can flood a mailbox."""

    scope = "password_reset_email"


class _PerUser(_SurvivesRedisOutage):
    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": str(request.user.pk)}


class VerifyResendThrottle(_PerUser):
    scope = "verify_resend"


class EmailChangeThrottle(_PerUser):
    scope = "email_change"


class SignupThrottle(_PerClientAddress):
    """Registrations accepted per client address per rolling hour (SIGNUP_LIMIT_PER_IP_PER_HOUR,
    0 = none), in the shared cache (Redis when configured). Only accepted registrations count:
    `allow_request` checks, and the view calls `record` once the account exists, so a typo
    (a 400) costs nobody a registration."""

    scope = "signup"

    def get_rate(self) -> str | None:
        limit = settings.SIGNUP_LIMIT_PER_IP_PER_HOUR
        return f"{limit}/hour" if limit > 0 else None

    def throttle_success(self) -> bool:
        return True  # counted in `record`, after the registration succeeded

    def record(self) -> None:
        if self.rate is None or not getattr(self, "key", None):
            return
        try:
            history = self.cache.get(self.key, [])
            history.insert(0, self.timer())
            self.cache.set(self.key, history, self.duration)  # type: ignore[attr-defined]
        except redis.RedisError:
            logger.warning("signup limit: Redis unreachable, this registration is not counted")


def _email(request: Request) -> str:
    """The address as login looks it up (`normalize_email`), so every spelling of one account
    shares its count and no other account's."""
    data = request.data if isinstance(request.data, dict) else {}
    return normalize_email(str(data.get("email") or ""))


def _utf8(text: str) -> bytes:
    """Throttles run before the serializer refuses a lone surrogate (400): encoded here so such
    a body is still counted, under a key of its own, rather than a 500."""
    return text.encode("utf-8", "surrogatepass")
