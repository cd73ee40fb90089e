"""`POST /internal/v1/authorize`, `POST /internal/v1/settle` (CONTRACT.md, "Internal API") and
`POST /internal/v1/settle/batch` (part 2, "Batch settle for gateways": up to 100 settles in one
call and, on PostgreSQL, one database round trip, `gateway_settle_batch`).

Plain Django views, not DRF: these run on every end-user request, and a probe measured DRF's
per-request machinery plus the ORM at a sixth of the throughput of a plain view calling one SQL
function. The rest of the API stays DRF.

Authorize, in the contract's order: a request id allowed before replays its first answer
(another key: 409); the key (401); the account frozen (403); an available credit (403); the
three rate-limit windows of the key's tier (429); then the hold. On PostgreSQL, a key this
process has seen before is authorized in one database call after the limiter (see
`_authorize_in_one`); otherwise, and for every answer but "allowed", the database is asked twice:
once to read (key, account) before the limiter, once to create the hold after it. The limiter
must run between the two because the tier depends on the balance and because a request refused
for credit must not consume quota; if the hold is refused after the limiter counted the request
(credits taken by a concurrent request meanwhile), the count is taken back.
"""

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError

from accounts import secrets
from accounts.api_keys import api_key_is_well_formed
from config import observability
from config.ids import uuid7
from config.parsers import TOO_DEEP_MESSAGE
from config.text import made_storable, storable
from credits import clock

from . import backends, decisions
from .backends import SettleItem, SettleOutcome, Usage
from .calls import Answer, Call, Handler, as_django_view, decode, error_answer, with_service_token
from .outcomes import Outcome
from .ratelimit import limiter_hit, limiter_peek, limiter_undo, tier_for_balance

logger = logging.getLogger(__name__)

MAX_REQUEST_ID = 128
MAX_MODEL = 64
MAX_REASON = 64


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _body(call: Call) -> dict[str, Any]:
    try:
        body = decode(call.body())
    except RequestDataTooBig as exc:
        # Django refuses to read past DATA_UPLOAD_MAX_MEMORY_SIZE; without this it is a 500 on
        # the hot-path WSGI entry (which has no handler turning it into a 400).
        raise BadRequest(
            f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The body must be a JSON object.") from exc
    except RecursionError as exc:
        # Nested deeper than `json.loads` recurses: not a ValueError, and a 500 without this.
        raise BadRequest(TOO_DEEP_MESSAGE) from exc
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def _string(
    body: dict[str, Any],
    field: str,
    *,
    required: bool,
    max_length: int | None = None,
    recorded: bool = False,
) -> str | None:
    """`body[field]` as a string. An identifier that PostgreSQL cannot store is a 400. A
    `recorded` field (model, reason) is only written down, never a reason to refuse: the
    characters PostgreSQL cannot store are dropped or replaced, so a settle is never refused,
    and never left unsettled, for what the end user's own request named."""
    value = body.get(field)
    if value is None:
        if required:
            raise BadRequest(f"{field} is required.", field)
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string.", field)
    if not storable(value):
        if not recorded:
            raise BadRequest(
                f"{field} must not contain NUL characters or unpaired surrogates.", field
            )
        value = made_storable(value)
    if required and not value:
        raise BadRequest(f"{field} must not be empty.", field)
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"{field} must be at most {max_length} characters.", field)
    return value


def _count(value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{field} must be a non-negative integer.", field)
    if value > 2_147_483_647:
        raise BadRequest(f"{field} is too large.", field)
    return value


# `usage` keys: the contract's, and Anthropic's names for the same counts, so a gateway may pass
# either dialect's usage object through. Anything else is refused by name rather than dropped:
# a misspelt key silently recorded as 0 tokens would go unnoticed.
_USAGE_KEYS = {
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
}


def _usage_counts(usage: Any) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) of a settle's `usage` (absent: 0 and 0)."""
    if usage is None:
        return 0, 0
    if not isinstance(usage, dict):
        raise BadRequest("usage must be an object.", "usage")
    counts: dict[str, int] = {}
    for key, value in usage.items():
        name = _USAGE_KEYS.get(key)
        field = f"usage.{key}"
        if name is None:
            raise BadRequest(
                f"{field} is not a usage field; send prompt_tokens and completion_tokens "
                "(or Anthropic's input_tokens and output_tokens).",
                field,
            )
        if name in counts:
            raise BadRequest(f"{field} repeats usage.{name}; send one of the two.", field)
        counts[name] = _count(value, field)
    return counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)


# A hold's status in the gateway's words (the 409 of a settle with the other outcome).
_SETTLED_AS = {"committed": "success", "released": "failure", "expired": "failure"}


def _guarded(count: Callable[[str], None]) -> Callable[[Handler], Handler]:
    """Bad input is a 400 naming the field; an unreachable database a quick 503; anything else
    a 500. All are counted with `count`, the handler's own counter (config/observability.py)."""

    def decorate(view: Handler) -> Handler:
        @functools.wraps(view)
        def wrapper(call: Call) -> Answer:
            if call.method != "POST":
                return error_answer(
                    405, "method_not_allowed", "Use POST.", headers=(("Allow", "POST"),)
                )
            try:
                return view(call)
            except BadRequest as exc:
                count("invalid")
                return error_answer(400, "invalid_request", exc.message, exc.field)
            except (OperationalError, InterfaceError):
                count("unavailable")
                logger.exception("internal API: database unreachable")
                return error_answer(503, "unavailable", "The database cannot be reached.")
            except Exception:
                # A logic error (an outcome outside the vocabulary, a broken invariant): a 500,
                # counted and logged as such, never as an unreachable database.
                count("error")
                logger.exception("internal API: logic error")
                return error_answer(500, "server_error", "Internal server error.")

        return wrapper

    return decorate


def _logged(path: str) -> Callable[[Handler], Handler]:
    """Outermost layer: the request id of the call's log lines (the view binds the gateway's
    once it has read it; until then, and for the next request this thread serves, `-`), and
    the one log line of a 4xx answer (a refused service token included), with that id. Through
    Django, `as_django_view` marks such a response logged so that Django does not add another."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def wrapper(call: Call) -> Answer:
            token = observability.request_id.set("-")
            try:
                answer = handler(call)
                if 400 <= answer.status < 500:
                    error = answer.payload.get("error")
                    code = error.get("code", "") if isinstance(error, dict) else ""
                    observability.log_gateway_4xx(answer.status, path, code)
                return answer
            finally:
                observability.request_id.reset(token)

        return wrapper

    return decorate


def _decision(payload: dict[str, Any]) -> Answer:
    return Answer(200, payload)


def _replayed(decision: dict[str, Any] | None) -> Answer:
    """A replay: the answer as the backend rebuilt it (`decisions.replayed`)."""
    observability.count_authorization("replay")
    return _decision(decision or {})


def _conflict() -> Answer:
    observability.count_authorization("conflict")
    return error_answer(
        409,
        "request_id_conflict",
        "This request_id was already used with another API key.",
        "request_id",
    )


@_logged("/internal/v1/authorize")
@with_service_token
@_guarded(observability.count_authorization)
def authorize_answer(call: Call) -> Answer:
    body = _body(call)
    raw_key = body.get("api_key")
    if raw_key is not None and not isinstance(raw_key, str):
        raise BadRequest("api_key must be a string.", "api_key")
    request_id = _string(body, "request_id", required=True, max_length=MAX_REQUEST_ID)
    assert request_id is not None
    observability.bind_request_id(request_id)
    fmt = _string(body, "format", required=True)
    if fmt not in decisions.FORMATS:
        raise BadRequest("format must be 'openai' or 'anthropic'.", "format")
    # Recorded at settle; a reason to deny only for a key with `allowed_models` (issue 18).
    model = _string(body, "model", required=False, recorded=True)
    return _authorize(
        request_id=request_id, raw_key=raw_key or "", fmt=fmt, now=clock.now(), model=model
    )


# The one-round-trip path (PostgreSQL). The two-step path below asks the database twice because
# the limiter must run between the key/credit checks and the hold: the tier depends on the
# balance, and a request refused for key, frozen account or credit must not consume quota. Here
# the limiter runs first, on what this process saw of the key last time: its id (never changes
# for a digest) and its account's balance (the tier's guess). Then one SQL function checks key,
# frozen and credit under the account lock, checks the live balance is in the guessed tier, and
# creates the hold. Only "allowed" is final on this path; anything else (a replay, a 401/403,
# something due, another tier, a 429) takes the count back and is decided afresh the two-step
# way, so every denial keeps the contract's order and its exact answer.
#
# The trade-off: a request that ends denied is counted in its key's windows for the time of one
# database call before being taken back. A concurrent request of the same key that finds its
# window exactly full in that instant is refused with a 429 it would not otherwise have had;
# it needs a key at its limit plus a denial of the same key in the same millisecond, and the
# denial is final for the other request anyway. Counts never stay wrong. In exchange, an allowed
# authorization, nearly all of them, costs one database round trip instead of two.
#
# `_seen` is not a cache of keys' validity: the function looks the key up by its digest and
# checks revocation and expiry on every call, so a revoke still acts on the very next request in
# every worker. It only remembers which key id and tier to count the limiter against.
_seen: dict[str, tuple[str, str, int]] = {}  # digest -> (key id, user id, balance last seen)
_SEEN_MAX = 100_000


def seen_cache_clear() -> None:
    _seen.clear()


def _remember(digest: str | None, check: backends.Check) -> None:
    if digest is None or check.key_id is None or check.user_id is None:
        return
    if len(_seen) >= _SEEN_MAX:
        _seen.clear()
    _seen[digest] = (check.key_id, check.user_id, check.balance)


def _authorize_in_one(
    backend: backends.SqlBackend,
    *,
    request_id: str,
    digest: str,
    fmt: str,
    now: datetime,
    model: str | None,
) -> Answer | None:
    seen = _seen.get(digest)
    if seen is None:
        return None
    key_id, user_id, balance = seen
    tier = tier_for_balance(balance)
    if tier is None:
        return None
    limit = limiter_hit(key_id=key_id, tier=tier, now=now)
    if not limit.allowed:
        return None  # counted nothing; the 429 comes after the key and credit checks
    hold_id = str(uuid7(now))  # time-ordered: config/ids.py
    expires_at = now + timedelta(seconds=settings.HOLD_TTL_SECONDS)
    try:
        fast = backend.authorize(
            request_id=request_id,
            digest=digest,
            key_id=key_id,
            user_id=user_id,
            tier_min=tier.min_balance,
            tier_max=tier.max_balance,
            hold_id=hold_id,
            shape=decisions.answer_shape(fmt, tier, limit),
            now=now,
            expires_at=expires_at,
            model=model,
        )
    except BaseException:
        limiter_undo(limit)
        raise
    if fast.outcome == Outcome.OK and fast.decision is not None:
        if fast.balance is not None and fast.balance != balance:
            _seen[digest] = (key_id, user_id, fast.balance)
        observability.count_authorization("allowed")
        return _decision(fast.decision)
    limiter_undo(limit)
    if fast.outcome == Outcome.BAD_KEY:
        _seen.pop(digest, None)
    return None


def _well_formed_digest(raw_key: str) -> str | None:
    """The key's digest if it is well-formed (shape and checksum), else None. A digest in
    `_seen` is a well-formed key's (only those are remembered), so the checksum is checked only
    for a key this process has not seen: issue 23, about 9 us of CPU per authorize (measured
    with `timeit`, best of 7). Only ASCII is digested, as `api_key_is_well_formed` refuses the
    rest before encoding it."""
    if not raw_key.isascii():
        return None
    digest = secrets.digest(raw_key)
    if digest in _seen or api_key_is_well_formed(raw_key):
        return digest
    return None


def _authorize(
    *, request_id: str, raw_key: str, fmt: str, now: datetime, model: str | None = None
) -> Answer:
    backend = backends.get_backend()
    # A malformed key never reaches the key table; the request id is still looked up, since a
    # request id held with another key is a 409 whatever the key is.
    digest = _well_formed_digest(raw_key)
    if digest is not None and isinstance(backend, backends.SqlBackend):
        answer = _authorize_in_one(
            backend, request_id=request_id, digest=digest, fmt=fmt, now=now, model=model
        )
        if answer is not None:
            return answer
    for _ in range(3):
        check = backend.check(
            request_id=request_id, raw_key=raw_key, digest=digest, now=now, model=model
        )
        _remember(digest, check)
        if check.outcome == Outcome.BAD_KEY:
            _seen.pop(digest or "", None)
        if check.outcome == Outcome.REPLAY:
            return _replayed(check.decision)
        if check.outcome == Outcome.CONFLICT:
            return _conflict()
        if check.outcome == Outcome.BAD_KEY:
            observability.count_authorization(Outcome.BAD_KEY)
            return _decision(decisions.denied(fmt, Outcome.BAD_KEY))
        assert check.key_id is not None and check.user_id is not None
        tier = tier_for_balance(check.balance)
        if check.outcome in decisions.REFUSALS:
            observability.count_authorization(check.outcome)
            peek = limiter_peek(key_id=check.key_id, tier=tier, now=now) if tier else None
            return _decision(
                decisions.denied(fmt, check.outcome, available=check.available, limit=peek, now=now)
            )
        limit = limiter_hit(key_id=check.key_id, tier=tier, now=now) if tier else None
        if limit is not None and not limit.allowed:
            observability.count_authorization(Outcome.RATE_LIMITED)
            return _decision(
                decisions.denied(
                    fmt,
                    Outcome.RATE_LIMITED,
                    available=check.available,
                    limit=limit,
                    now=now,
                    tier=tier,
                )
            )
        hold_id = str(uuid7(now))  # time-ordered: config/ids.py
        expires_at = now + timedelta(seconds=settings.HOLD_TTL_SECONDS)
        try:
            held = backend.hold(
                request_id=request_id,
                key_id=check.key_id,
                user_id=check.user_id,
                hold_id=hold_id,
                shape=decisions.answer_shape(fmt, tier, limit),
                now=now,
                expires_at=expires_at,
                model=model,
            )
        except BaseException:
            if limit is not None:
                limiter_undo(limit)
            raise
        if held.outcome == Outcome.OK:
            assert held.decision is not None
            observability.count_authorization("allowed")
            return _decision(held.decision)
        # Refused after the limiter counted it: a denial consumes no quota.
        if limit is not None:
            limiter_undo(limit)
        if held.outcome == Outcome.REPLAY:
            return _replayed(held.decision)
        if held.outcome == Outcome.CONFLICT:
            return _conflict()
        if held.outcome in decisions.REFUSALS:
            observability.count_authorization(held.outcome)
            available = held.available if held.available is not None else 0
            peek = limiter_peek(key_id=check.key_id, tier=tier, now=now) if tier else None
            return _decision(
                decisions.denied(fmt, held.outcome, available=available, limit=peek, now=now)
            )
        # RETRY: the request id was taken on another account meanwhile; look again.
    # Three times the request id was taken on another account between our look and our hold:
    # not a database that is away, so not a 503 counted as one.
    raise RuntimeError("authorize: the request id kept changing under us")


def _settle_item(body: dict[str, Any], request_id: str) -> SettleItem:
    """The rest of a settle body (its request id read already), validated."""
    outcome = body.get("outcome")
    if outcome not in ("success", "failure"):
        raise BadRequest("outcome must be 'success' or 'failure'.", "outcome")
    http_status = body.get("http_status")
    if http_status is not None and (
        isinstance(http_status, bool)
        or not isinstance(http_status, int)
        or not 100 <= http_status <= 599
    ):
        raise BadRequest("http_status must be an HTTP status code (100 to 599).", "http_status")
    if outcome == "success" and http_status is not None and http_status >= 400:
        raise BadRequest(
            "A success cannot have an http_status of 400 or more; settle it as a failure.",
            "http_status",
        )
    model = _string(body, "model", required=False, recorded=True) or ""
    prompt_tokens, completion_tokens = _usage_counts(body.get("usage"))
    reason = _string(body, "reason", required=False, max_length=MAX_REASON, recorded=True) or ""
    return SettleItem(
        request_id=request_id,
        commit=outcome == "success",
        usage=Usage(
            # A model name is recorded, never a reason to refuse: an over-long one is cut.
            model=model[:MAX_MODEL],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            reason=reason,
            http_status=http_status,
        ),
    )


def _request_id(body: dict[str, Any]) -> str:
    request_id = _string(body, "request_id", required=True, max_length=MAX_REQUEST_ID)
    assert request_id is not None
    return request_id


# An item of a batch whose subtransaction raised: a lock or deadlock timeout or a serialization
# failure is worth a retry (503, as a lost database is on the single settle); anything else is
# a broken invariant (500). SQLSTATE classes: 40 transaction rollback, 55 object not in
# prerequisite state (55P03 lock_not_available), 57 operator intervention.
_RETRYABLE_SQLSTATE_CLASSES = ("40", "55", "57")


def _settle_answer(item: SettleItem, result: SettleOutcome) -> Answer:
    """Part 1's answer to a settle, counted."""
    if result.outcome == Outcome.NOT_FOUND:
        observability.count_settle("not_found")
        return error_answer(
            404,
            "request_not_found",
            "No authorized request has this request_id (never authorized, or denied).",
            "request_id",
        )
    if result.outcome == Outcome.CONFLICT:
        observability.count_settle("conflict")
        first = _SETTLED_AS.get(result.status or "", result.status)
        settled_as = "success" if item.commit else "failure"
        return error_answer(
            409,
            "request_already_settled",
            f"This request was already settled as {first}; settling it as {settled_as} "
            "changed nothing.",
            "outcome",
        )
    if result.outcome == Outcome.ERROR:
        logger.error("internal API: batch settle item failed with SQLSTATE %s", result.status)
        if (result.status or "")[:2] in _RETRYABLE_SQLSTATE_CLASSES:
            observability.count_settle("unavailable")
            return error_answer(503, "unavailable", "The database could not settle it now.")
        observability.count_settle("error")
        return error_answer(500, "server_error", "Internal server error.")
    if result.outcome not in (Outcome.OK, Outcome.REPLAY):
        raise RuntimeError(f"settle: unexpected outcome {result.outcome!r}")
    observability.count_settle("charged" if result.charged else "not_charged")
    return Answer(
        200,
        {
            "request_id": item.request_id,
            "charged": result.charged,
            "credits_remaining": result.available,
        },
    )


@_logged("/internal/v1/settle")
@with_service_token
@_guarded(observability.count_settle)
def settle_answer(call: Call) -> Answer:
    body = _body(call)
    request_id = _request_id(body)
    observability.bind_request_id(request_id)
    item = _settle_item(body, request_id)
    result = backends.get_backend().settle(
        request_id=item.request_id, commit=item.commit, usage=item.usage, now=clock.now()
    )
    return _settle_answer(item, result)


MAX_BATCH = 100
BATCH_PATH = "/internal/v1/settle/batch"


@contextlib.contextmanager
def _bound(request_id: Any) -> Iterator[None]:
    """Log lines meanwhile carry this item's request id (the batch's own lines carry `-`)."""
    token = observability.request_id.set("-")
    try:
        if isinstance(request_id, str):
            observability.bind_request_id(request_id)
        yield
    finally:
        observability.request_id.reset(token)


def _batch_item(request_id: Any, answer: Answer) -> dict[str, Any]:
    """An item's answer in the batch: part 1's body, or its error with the status it would have
    had (a 4xx logged as the single settle's is)."""
    if answer.status == 200:
        return answer.payload
    error = answer.payload["error"]
    if answer.status < 500:
        observability.log_gateway_4xx(answer.status, BATCH_PATH, error.get("code", ""))
    return {
        "request_id": request_id if isinstance(request_id, str) else None,
        "error": error,
        "status": answer.status,
    }


@_logged(BATCH_PATH)
@with_service_token
@_guarded(observability.count_settle)
def settle_batch_answer(call: Call) -> Answer:
    """Up to `MAX_BATCH` settles in one call (CONTRACT.md part 2, "Batch settle for gateways"):
    each item answered in order, as part 1 answers it or as `{"request_id", "error", "status"}`.
    A bad envelope is a 400 naming `settles`; a bad item is that item's 400 only."""
    body = _body(call)
    settles = body.get("settles")
    if settles is None:
        raise BadRequest("settles is required: a list of settle bodies.", "settles")
    if not isinstance(settles, list):
        raise BadRequest("settles must be a list of settle bodies.", "settles")
    if not settles:
        raise BadRequest("settles must not be empty.", "settles")
    if len(settles) > MAX_BATCH:
        raise BadRequest(f"settles must hold at most {MAX_BATCH} settle bodies.", "settles")
    results: list[dict[str, Any] | None] = [None] * len(settles)
    places: list[int] = []
    items: list[SettleItem] = []
    for place, raw in enumerate(settles):
        request_id = raw.get("request_id") if isinstance(raw, dict) else None
        with _bound(request_id):
            try:
                if not isinstance(raw, dict):
                    raise BadRequest("The body must be a JSON object.")  # as the single settle says
                items.append(_settle_item(raw, _request_id(raw)))
                places.append(place)
            except BadRequest as exc:
                observability.count_settle("invalid")
                answer = error_answer(400, "invalid_request", exc.message, exc.field)
                results[place] = _batch_item(request_id, answer)
    outcomes = backends.get_backend().settle_batch(items=items, now=clock.now())
    for place, item, result in zip(places, items, outcomes, strict=True):
        with _bound(item.request_id):
            results[place] = _batch_item(item.request_id, _settle_answer(item, result))
    return Answer(200, {"results": results})


authorize = as_django_view(authorize_answer)
settle = as_django_view(settle_answer)
settle_batch = as_django_view(settle_batch_answer)
