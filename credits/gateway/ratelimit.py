"""Rate limits per API key: three fixed windows (minute, hour, day) aligned to UTC.

`limiter_hit` checks all three windows and counts the request in all three only if all pass:
with Redis, one Lua script (one round trip, atomic on the server); without `REDIS_URL`, an
in-process table under a lock (the embedded default: one process only). `limiter_undo` takes a
counted request back (the hold was then refused for credit), `limiter_peek` reads the counts
without counting (the headers of a 403). Window time comes from `credits.clock.now()`.

If Redis cannot be reached, the limiter fails open: the request is allowed, the failure is
logged and counted in `REDIS_FAILURES`. Credits stay exact either way: they live in the database.

Tiers come from `credits.models.Tier` (staff edit them in the admin), cached in-process for
`TIER_CACHE_SECONDS` so the hot path does not query them.
"""

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import redis
from django.conf import settings

from config.redis import redis_lane
from credits.gateway.models import Tier

logger = logging.getLogger(__name__)

TIER_CACHE_SECONDS = 5.0
WINDOWS: tuple[tuple[str, int], ...] = (("minute", 60), ("hour", 3600), ("day", 86400))


@dataclass(frozen=True)
class TierLimits:
    name: str
    min_balance: int
    max_balance: int | None
    limits: tuple[int, int, int]  # per minute, per hour, per day


@dataclass(frozen=True)
class Window:
    name: str  # minute, hour or day
    limit: int
    count: int  # requests counted in the window, this one included when it was counted
    end: int  # unix seconds at which the window resets

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)


@dataclass(frozen=True)
class LimitResult:
    allowed: bool
    windows: tuple[Window, Window, Window]
    refused: Window | None  # the window that refused, on a denial
    keys: tuple[str, str, str]  # the counters, for limiter_undo
    counted: bool  # False when the limiter failed open or only peeked

    @property
    def described(self) -> Window:
        """The window the headers describe: the refusing one, else the one with the fewest
        remaining requests (ties to the shorter window)."""
        if self.refused is not None:
            return self.refused
        return min(self.windows, key=lambda w: w.remaining)  # min keeps the first of ties


# --- tiers ---------------------------------------------------------------------------------

_tiers: tuple[float, list[TierLimits]] | None = None
_tiers_lock = threading.Lock()


def tiers_cached() -> list[TierLimits]:
    global _tiers
    cached = _tiers
    if cached is not None and time.monotonic() - cached[0] < TIER_CACHE_SECONDS:
        return cached[1]
    rows = [
        TierLimits(
            t.name,
            t.min_balance,
            t.max_balance,
            (t.requests_per_minute, t.requests_per_hour, t.requests_per_day),
        )
        for t in Tier.objects.order_by("min_balance")
    ]
    with _tiers_lock:
        _tiers = (time.monotonic(), rows)
    return rows


def tiers_cache_clear() -> None:
    global _tiers
    with _tiers_lock:
        _tiers = None


def tier_for_balance(balance: int) -> TierLimits | None:
    """The tier of a balance (the balance before the request). Balance 0 has no tier."""
    if balance <= 0:
        return None
    for tier in tiers_cached():
        if tier.min_balance <= balance and (
            tier.max_balance is None or balance <= tier.max_balance
        ):
            return tier
    return None


def tier_above(tier: TierLimits) -> TierLimits | None:
    """The tier a larger balance reaches next (for the 429's message), or None at the top."""
    if tier.max_balance is None:
        return None
    for other in tiers_cached():
        if other.min_balance > tier.max_balance:
            return other
    return None


# --- windows -------------------------------------------------------------------------------


def _window_keys(key_id: str, now: datetime) -> tuple[tuple[str, str, str], tuple[int, int, int]]:
    ts = int(now.timestamp())
    starts = [ts - ts % length for _, length in WINDOWS]
    # The braces make all three keys of one API key share a Redis Cluster slot.
    keys = tuple(
        f"rl:{{{key_id}}}:{name[0]}:{start}"
        for (name, _), start in zip(WINDOWS, starts, strict=True)
    )
    ends = tuple(start + length for (_, length), start in zip(WINDOWS, starts, strict=True))
    return keys, ends  # type: ignore[return-value]


def _result(
    limits: Sequence[int],
    counts: Sequence[int],
    ends: Sequence[int],
    keys: tuple[str, str, str],
    *,
    refused_index: int | None,
    counted: bool,
) -> LimitResult:
    windows = tuple(
        Window(name, limit, count, end)
        for (name, _), limit, count, end in zip(WINDOWS, limits, counts, ends, strict=True)
    )
    refused = windows[refused_index] if refused_index is not None else None
    return LimitResult(
        allowed=refused is None,
        windows=windows,  # type: ignore[arg-type]
        refused=refused,
        keys=keys,
        counted=counted,
    )


# Checks the three windows and counts the request in all three only if all pass. Returns
# {refused window index (0 = none, 1..3), count1, count2, count3}: the counts after counting,
# or as they stand on a refusal.
_HIT_SCRIPT = """
local c = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])
for i = 1, 3 do
  local n = tonumber(c[i]) or 0
  if n >= tonumber(ARGV[i]) then
    return {i, tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0}
  end
end
local out = {0}
for i = 1, 3 do
  out[i + 1] = redis.call('INCR', KEYS[i])
  if out[i + 1] == 1 then redis.call('EXPIRE', KEYS[i], ARGV[i + 3]) end
end
return out
"""

# Takes back a counted request: never below zero, never recreating an expired window.
_UNDO_SCRIPT = """
for i = 1, 3 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
"""

# Expire a window's counter a while after it ends (a minute of slack for clock skew).
_TTLS = tuple(length + 60 for _, length in WINDOWS)

REDIS_FAILURES = 0  # how often the limiter failed open since the process started
_failures_lock = threading.Lock()


def _count_failure(what: str) -> None:
    global REDIS_FAILURES
    with _failures_lock:
        REDIS_FAILURES += 1
    logger.warning("rate limiter: Redis unreachable during %s; failing open", what, exc_info=True)


# --- in-process limiter (no REDIS_URL) -------------------------------------------------------


class LocalLimiter:
    """The same semantics as the Lua script, for one process (thread-safe)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._expiry: dict[str, int] = {}
        self._lock = threading.Lock()
        self._last_sweep = 0

    def _sweep(self, now_ts: int) -> None:
        if now_ts - self._last_sweep < 60:
            return
        self._last_sweep = now_ts
        for key in [k for k, end in self._expiry.items() if end <= now_ts]:
            self._counts.pop(key, None)
            self._expiry.pop(key, None)

    def hit(
        self, keys: Sequence[str], limits: Sequence[int], ends: Sequence[int], now_ts: int
    ) -> tuple[int | None, list[int]]:
        with self._lock:
            self._sweep(now_ts)
            counts = [self._counts.get(k, 0) for k in keys]
            for i, (count, limit) in enumerate(zip(counts, limits, strict=True)):
                if count >= limit:
                    return i, counts
            for i, key in enumerate(keys):
                counts[i] += 1
                self._counts[key] = counts[i]
                self._expiry[key] = ends[i] + 60
            return None, counts

    def undo(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                if self._counts.get(key, 0) > 0:
                    self._counts[key] -= 1

    def peek(self, keys: Sequence[str]) -> list[int]:
        with self._lock:
            return [self._counts.get(k, 0) for k in keys]

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._expiry.clear()


local_limiter = LocalLimiter()


# --- the limiter ---------------------------------------------------------------------------


def limiter_hit(*, key_id: str, tier: TierLimits, now: datetime) -> LimitResult:
    """Count one request of `key_id` in its three windows if all three have room."""
    keys, ends = _window_keys(key_id, now)
    if not settings.REDIS_URL:
        refused, counts = local_limiter.hit(keys, tier.limits, ends, int(now.timestamp()))
        return _result(tier.limits, counts, ends, keys, refused_index=refused, counted=True)
    try:
        reply = redis_lane().run_script(_HIT_SCRIPT, keys, [*tier.limits, *_TTLS])
    except redis.RedisError:
        _count_failure("a check")
        return _result(tier.limits, (0, 0, 0), ends, keys, refused_index=None, counted=False)
    refused = int(reply[0])
    counts = [int(c) for c in reply[1:4]]
    return _result(
        tier.limits,
        counts,
        ends,
        keys,
        refused_index=refused - 1 if refused else None,
        counted=not refused,
    )


def limiter_undo(result: LimitResult) -> None:
    """Take back a request counted by `limiter_hit` (its hold was refused afterwards)."""
    if not result.counted:
        return
    if not settings.REDIS_URL:
        local_limiter.undo(result.keys)
        return
    try:
        redis_lane().run_script(_UNDO_SCRIPT, result.keys, [])
    except redis.RedisError:
        _count_failure("an undo")


def limiter_peek(*, key_id: str, tier: TierLimits, now: datetime) -> LimitResult:
    """The windows as they stand, counting nothing (for the headers of a 403)."""
    keys, ends = _window_keys(key_id, now)
    if not settings.REDIS_URL:
        counts = local_limiter.peek(keys)
    else:
        try:
            counts = [int(c or 0) for c in redis_lane().call("MGET", *keys)]
        except redis.RedisError:
            _count_failure("a peek")
            counts = [0, 0, 0]
    return _result(tier.limits, counts, ends, keys, refused_index=None, counted=False)
