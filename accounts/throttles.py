from hashlib import sha256
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class LoginThrottle(SimpleRateThrottle):
    """Login attempts per client address and email (rate `login` in REST_FRAMEWORK's
    DEFAULT_THROTTLE_RATES, 10/min). Counted in the default cache, which is Redis when
    REDIS_URL is set, so every worker shares the count; the embedded default counts per
    process. Keyed on the pair so one attacker cannot lock a victim out from elsewhere, and
    a shared NAT address does not lock out everyone behind it."""

    scope = "login"

    def get_cache_key(self, request: Request, view: Any) -> str:
        data = request.data if isinstance(request.data, dict) else {}
        email = str(data.get("email") or "").strip().lower()
        # Hashed: the cache holds no email addresses.
        ident = sha256(f"{self.get_ident(request)}|{email}".encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class LoginEmailThrottle(SimpleRateThrottle):
    """A looser cap per email alone: client addresses come from X-Forwarded-For behind the
    load balancer, which a client can vary, so the pair above alone would not stop a
    password-guessing run against one account."""

    scope = "login_email"
    rate = "30/min"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        data = request.data if isinstance(request.data, dict) else {}
        email = str(data.get("email") or "").strip().lower()
        if not email:
            return None
        ident = sha256(email.encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}
