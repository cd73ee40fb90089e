"""The decisions `POST /internal/v1/authorize` answers: bodies and headers in both dialects.

`status`, `error` and `headers` of a decision are exactly what the gateway returns to its end
user (CONTRACT.md, "Internal API"): the error body in the requested format (`openai` or
`anthropic`), the documented `X-RateLimit-*` and `X-Credits-Remaining` headers, and the rate-limit
dialect that the requested format's SDKs read (never the other format's).

**Replays without a stored answer (issue 23).** An allowed answer is not stored: a replay
(CONTRACT.md, "Retries") rebuilds it, byte for byte, from the hold's own columns (id, expiry,
account, key, `created_at`: the instant the answer was made) and the few values only the
authorize knew, kept on the hold as an `AnswerShape` (format, tier name, the described window's
index, limit and remaining) plus the credits remaining after the hold: about 40 bytes instead of
the 600-byte JSON answer each hold used to carry. The window's reset is its end, which the
window's index and the answer's instant determine (windows are fixed and aligned to UTC), and the
OpenAI reset duration is computed from the same instant, so nothing of the answer depends on
when it is replayed. Holds written before keep their stored answer (`Hold.decision`), replayed
as it is (`replayed`).
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.fields import rfc3339

from .outcomes import Outcome
from .ratelimit import WINDOWS, LimitResult, TierLimits, Window, tier_above

OPENAI = "openai"
ANTHROPIC = "anthropic"
FORMATS = (OPENAI, ANTHROPIC)

# reason -> (HTTP status, OpenAI type, OpenAI code, Anthropic type)
_REASONS: dict[Outcome, tuple[int, str, str, str]] = {
    Outcome.BAD_KEY: (401, "invalid_request_error", "invalid_api_key", "authentication_error"),
    Outcome.FROZEN: (403, "invalid_request_error", "account_frozen", "permission_error"),
    Outcome.NO_CREDIT: (403, "insufficient_quota", "insufficient_credits", "permission_error"),
    Outcome.ACCOUNT_LIMIT: (
        403,
        "insufficient_quota",
        "account_limit_exceeded",
        "permission_error",
    ),
    Outcome.KEY_BUDGET: (403, "insufficient_quota", "key_budget_exceeded", "permission_error"),
    Outcome.MODEL_NOT_ALLOWED: (
        403,
        "invalid_request_error",
        "model_not_allowed",
        "permission_error",
    ),
    Outcome.RATE_LIMITED: (429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
}

_MESSAGES = {
    Outcome.FROZEN: "This account is frozen; contact support.",
    Outcome.NO_CREDIT: "Insufficient credits: this account has no available credit. "
    "Buy credits to continue.",
    Outcome.ACCOUNT_LIMIT: "This account has reached its monthly credit limit.",
    Outcome.KEY_BUDGET: "This API key has reached its budget for the period.",
    Outcome.MODEL_NOT_ALLOWED: "This API key may not use the requested model.",
}

# The 403s decided by the account and key after the key itself (CONTRACT.md parts 1 and 2).
REFUSALS = (
    Outcome.FROZEN,
    Outcome.NO_CREDIT,
    Outcome.ACCOUNT_LIMIT,
    Outcome.KEY_BUDGET,
    Outcome.MODEL_NOT_ALLOWED,
)


def seconds_until(end: int, now: datetime) -> int:
    """Whole seconds until a window's end, at least 1 (a `Retry-After` of 0 invites a spin)."""
    return max(1, math.ceil(end - now.timestamp()))


def duration(seconds: int) -> str:
    """OpenAI's reset duration: `12s`, `1m30s`, `2h0m5s`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def error_body(fmt: str, reason: Outcome, message: str | None = None) -> dict[str, Any]:
    _, openai_type, code, anthropic_type = _REASONS[reason]
    if reason == Outcome.BAD_KEY:
        message = "Invalid API key provided" if fmt == OPENAI else "Invalid API key"
    message = message or _MESSAGES[reason]
    if fmt == OPENAI:
        return {"error": {"message": message, "type": openai_type, "code": code}}
    return {"type": "error", "error": {"type": anthropic_type, "message": message}}


def rate_limit_headers(fmt: str, limit: LimitResult, now: datetime) -> dict[str, str]:
    window = limit.described
    return _window_headers(fmt, window.limit, window.remaining, window.end, now)


def _window_headers(
    fmt: str, limit: int, remaining: int, end: int, now: datetime
) -> dict[str, str]:
    wait = seconds_until(end, now)
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(end),
    }
    if fmt == OPENAI:
        headers["x-ratelimit-limit-requests"] = str(limit)
        headers["x-ratelimit-remaining-requests"] = str(remaining)
        headers["x-ratelimit-reset-requests"] = duration(wait)
    else:
        headers["anthropic-ratelimit-requests-limit"] = str(limit)
        headers["anthropic-ratelimit-requests-remaining"] = str(remaining)
        headers["anthropic-ratelimit-requests-reset"] = rfc3339(datetime.fromtimestamp(end, tz=UTC))
    return headers


_WINDOW_INDEX = {name: index for index, (name, _) in enumerate(WINDOWS)}


def rate_limited_message(window: Window, tier: TierLimits | None) -> str:
    """The 429's message: the window and its limit, the tier, and what raises the limit (the
    tier follows the balance, so an end user who hits it can act on it)."""
    message = f"Rate limit exceeded: {window.limit} requests per {window.name}"
    if tier is None:
        return message
    message += f' on tier "{tier.name}".'
    above = tier_above(tier)
    if above is None:
        return message + " This is the highest tier."
    limit_above = above.limits[_WINDOW_INDEX[window.name]]
    return message + (
        f" A higher balance raises the limit: from {above.min_balance:,} credits, "
        f'tier "{above.name}" allows {limit_above:,} requests per {window.name}.'
    )


def denied(
    fmt: str,
    reason: Outcome,
    *,
    available: int | None = None,
    limit: LimitResult | None = None,
    now: datetime | None = None,
    tier: TierLimits | None = None,
) -> dict[str, Any]:
    """A denial. A 401 carries no headers; a 403 or 429 carries `X-Credits-Remaining` and,
    when the account has a tier, the rate-limit headers; a 429 adds `Retry-After` and names
    `tier` in its message."""
    status = _REASONS[reason][0]
    headers: dict[str, str] = {}
    message = None
    if reason != Outcome.BAD_KEY:
        assert available is not None
        if limit is not None and now is not None:
            headers.update(rate_limit_headers(fmt, limit, now))
        headers["X-Credits-Remaining"] = str(max(0, available))
        if reason == Outcome.RATE_LIMITED:
            assert limit is not None and limit.refused is not None and now is not None
            window = limit.refused
            message = rate_limited_message(window, tier)
            headers["Retry-After"] = str(seconds_until(window.end, now))
    return {
        "allowed": False,
        "status": status,
        "error": error_body(fmt, reason, message),
        "headers": headers,
    }


@dataclass(frozen=True, slots=True)
class AnswerShape:
    """What an allowed answer holds that the hold's own columns do not: kept on the hold
    (`Hold.answer_*`), so that a replay rebuilds the answer (`allowed_answer`)."""

    fmt: str
    tier: str | None
    window: int | None  # the described window's index in `ratelimit.WINDOWS`; None: no tier
    limit: int | None
    remaining: int | None

    @property
    def format_code(self) -> int:
        return FORMATS.index(self.fmt)

    @property
    def tier_text(self) -> str:
        """The tier's name as the hold keeps it: empty for none (a tier's name never is)."""
        return self.tier or ""

    @property
    def sql_params(self) -> tuple[int, str, int | None, int | None, int | None]:
        """The five parameters the hold-writing SQL functions take for it, in their order
        (`gateway_hold_create`, `gateway_authorize`: `answer_format` .. `answer_remaining`)."""
        return (self.format_code, self.tier_text, self.window, self.limit, self.remaining)


def answer_shape(fmt: str, tier: TierLimits | None, limit: LimitResult | None) -> AnswerShape:
    """The shape of the answer that allows a request under `tier`, counted as `limit`."""
    name = tier.name if tier is not None else None
    if limit is None:
        return AnswerShape(fmt, name, None, None, None)
    window = limit.described
    return AnswerShape(fmt, name, _WINDOW_INDEX[window.name], window.limit, window.remaining)


def allowed_answer(
    shape: AnswerShape,
    *,
    hold_id: str,
    hold_expires_at: datetime,
    user_id: str,
    key_id: str,
    now: datetime,
    available_after: int,
) -> dict[str, Any]:
    """An allowed decision, the first time and on every replay (the same values make the same
    bytes). `now` is the instant of the first answer (the hold's `created_at`); the window's
    end is the end of the window of that instant, as the limiter computed it."""
    headers: dict[str, str] = {}
    if shape.window is not None:
        assert shape.limit is not None and shape.remaining is not None
        length = WINDOWS[shape.window][1]
        start = int(now.timestamp())
        end = start - start % length + length
        headers = _window_headers(shape.fmt, shape.limit, shape.remaining, end, now)
    headers["X-Credits-Remaining"] = str(available_after)
    return {
        "allowed": True,
        "hold_id": hold_id,
        "hold_expires_at": rfc3339(hold_expires_at),
        "user_id": user_id,
        "key_id": key_id,
        "tier": shape.tier,
        "credits_remaining": available_after,
        "headers": headers,
    }


# Where a stored answer of a hold written before issue 23 kept its first settle's answer.
LEGACY_SETTLE_KEY = "_settle"


def _moment(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def replayed(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The answer a replay gives: a hold's stored answer as it was (a hold written before issue
    23), or its answer rebuilt from the hold's columns (`stored` then has them by name:
    `hold_id`, `expires_at`, `user_id`, `key_id`, `created_at`, `format`, `tier`, `window`,
    `limit`, `remaining`, `available`; from the ORM, or as JSON from the SQL functions). A hold
    made outside the gateway has neither, and replays an empty object, as it always did."""
    if not stored:
        return {}
    if "allowed" in stored:
        return {key: value for key, value in stored.items() if key != LEGACY_SETTLE_KEY}
    if stored.get("format") is None:
        return {}
    shape = AnswerShape(
        FORMATS[stored["format"]],
        stored["tier"] or None,
        stored["window"],
        stored["limit"],
        stored["remaining"],
    )
    return allowed_answer(
        shape,
        hold_id=str(stored["hold_id"]),
        hold_expires_at=_moment(stored["expires_at"]),
        user_id=str(stored["user_id"]),
        key_id=str(stored["key_id"]),
        now=_moment(stored["created_at"]),
        available_after=stored["available"],
    )
