"""Resolving end users' API keys: the read on the gateway's hot path.

No key is cached in-process (or anywhere): each resolve is one indexed lookup by digest, so a
revoke acts on the very next request in every worker. The checksum is tested first, so a
mistyped or made-up key costs no database round trip at all.
"""

from datetime import datetime, timedelta

from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from . import secrets
from .models import ApiKey

# `last_used_at` is accurate to this much. Writing it on every request would turn each
# authorize into a write (row lock, WAL, vacuum churn on one hot row per busy key); writing
# it only when the stored value is older than this costs at most one UPDATE per key per
# minute, and the common case adds no round trip because the lookup already returned it.
LAST_USED_RESOLUTION = timedelta(seconds=60)

# Length of what follows the prefix in every key we issue: 43 base62 characters of 32 random
# bytes and a 6-character checksum (see `accounts.secrets`).
_SECRET_TAIL_LENGTH = 49
_MAX_PREFIX_LENGTH = 24  # config/settings.py refuses a longer API_KEY_PREFIX


def api_key_is_well_formed(raw: str) -> bool:
    """True when `raw` has the shape and checksum of a key we issued.

    The prefix is taken as whatever precedes the last 49 characters, not only the currently
    configured `API_KEY_PREFIX`: keys issued under an earlier prefix keep working after the
    setting changes. The checksum covers the prefix, so a typo anywhere is still caught.
    """
    if not isinstance(raw, str):
        return False
    prefix_length = len(raw) - _SECRET_TAIL_LENGTH
    if not 1 <= prefix_length <= _MAX_PREFIX_LENGTH:
        return False
    return secrets.is_well_formed(raw, raw[:prefix_length])


def api_key_resolve(raw: str, *, now: datetime | None = None) -> ApiKey | None:
    """The live key `raw` is (with its user loaded), or None.

    Live: not revoked, not expired at `now`, and its user is active. `now` defaults to the
    wall clock; the gateway passes the ledger's clock so tests can move time.
    """
    if not api_key_is_well_formed(raw):
        return None
    now = now or timezone.now()
    digest = secrets.digest(raw)
    # The key's secret, or the secret it had before its last rotation, in the grace period.
    key = (
        ApiKey.objects.select_related("user")
        .filter(Q(digest=digest) | Q(previous_digest=digest, previous_expires_at__gt=now))
        .first()
    )
    if key is None:
        return None
    if key.revoked_at is not None or not key.user.is_active:
        return None
    if key.expires_at is not None and key.expires_at <= now:
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional, so that of many workers seeing the same stale value at once, the
        # first writes and the rest match no row (and take no lock after the first commits).
        stale = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)
        ).update(last_used_at=now)
        key.last_used_at = now
    return key


def bearer_credentials(authorization: str) -> str:
    """What follows `Bearer ` in an Authorization header's value, or "" for another scheme."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def api_key_from_request(request: HttpRequest) -> str | None:
    """The API key a request carries: `Authorization: Bearer KEY` (OpenAI-style clients) or
    `X-API-Key: KEY` (Anthropic-style clients); None when it carries neither."""
    bearer = bearer_credentials(request.headers.get("Authorization", ""))
    if bearer:
        return bearer
    header = request.headers.get("X-API-Key", "").strip()
    return header or None
