"""The database side of the hot path, in two implementations with one behaviour.

- `ServicesBackend` calls `credits.services` (hold_create / hold_commit / hold_release) and the
  ORM: simple, obviously right, about fifteen statements per call. It is the implementation on
  SQLite (the embedded default) and the fallback of the other one.
- `SqlBackend` (PostgreSQL) does each step in one round trip: one call of a PL/pgSQL function
  (`credits/gateway/sql/`: `gateway_authorize_check`, `gateway_hold_create`, `gateway_settle`,
  and `gateway_authorize`, the first two in one call when the caller could run the limiter
  first). Whenever the account has something due (a lot or a hold past its expiry), the hold
  has expired, or a released credit's lot has expired, the function writes nothing and answers
  `Outcome.DUE`, and the services do the work, so expiry logic lives in one place.

Both answer in one vocabulary, `credits.gateway.outcomes.Outcome`, and both build an allowed
answer, the first time and on every replay, with `credits.gateway.decisions.allowed_answer`
from the hold's columns (issue 23: the answer is not stored; `decisions.replayed`).

Both run the same behavioural tests (tests/gateway: the `backend` fixture switches them).
"""

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction

from accounts import budgets
from accounts.api_keys import api_key_resolve
from credits import services
from credits.errors import (
    AccountFrozen,
    AccountLimitExceeded,
    HoldAlreadySettled,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    KeyBudgetExceeded,
    ModelNotAllowed,
)
from credits.gateway.models import UsageRecord
from credits.models import CreditAccount, Event, Hold
from credits.signals import auto_topup_requested, event_recorded

from . import decisions
from .decisions import AnswerShape
from .outcomes import Outcome

HOLD_EXPIRED = "hold_expired"


@dataclass(frozen=True)
class Check:
    outcome: Outcome
    key_id: str | None = None
    user_id: str | None = None
    balance: int = 0
    available: int = 0
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class HoldOutcome:
    outcome: Outcome
    available: int | None = None
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class Fast:
    outcome: str  # Outcome.OK, or the reason to decide afresh (seen, bad_key, due, retier, ...)
    balance: int | None = None  # the live balance, when the account was read
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class SettleOutcome:
    outcome: Outcome
    charged: int = 0
    available: int = 0
    status: str | None = None  # the hold's status (named in a 409)


@dataclass(frozen=True)
class Usage:
    model: str
    prompt_tokens: int
    completion_tokens: int
    reason: str
    http_status: int | None


@dataclass(frozen=True)
class SettleItem:
    """One settle of a batch, validated."""

    request_id: str
    commit: bool
    usage: Usage


def _json(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    loaded: dict[str, Any] = json.loads(value)
    return loaded


# The hold's columns a replay reads (`_stored`).
_ANSWER_FIELDS = (
    "decision",
    "id",
    "expires_at",
    "account_id",
    "api_key_id",
    "created_at",
    "answer_format",
    "answer_tier",
    "answer_window",
    "answer_limit",
    "answer_remaining",
    "answer_available",
)


def _stored(row: dict[str, Any]) -> dict[str, Any] | None:
    """`decisions.replayed`'s input from a hold's `_ANSWER_FIELDS` (as `.values()` reads them):
    its stored answer (a hold written before issue 23), or the values the answer is rebuilt
    from, by the names the SQL functions give them."""
    if row["decision"] is not None:
        return _json(row["decision"])
    return {
        "hold_id": row["id"],
        "expires_at": row["expires_at"],
        "user_id": row["account_id"],
        "key_id": row["api_key_id"],
        "created_at": row["created_at"],
        "format": row["answer_format"],
        "tier": row["answer_tier"],
        "window": row["answer_window"],
        "limit": row["answer_limit"],
        "remaining": row["answer_remaining"],
        "available": row["answer_available"],
    }


def hold_replay(hold: Hold) -> dict[str, Any]:
    """The answer a replay of `hold`'s request id gives."""
    return decisions.replayed(_stored({name: getattr(hold, name) for name in _ANSWER_FIELDS}))


def _answer_columns(shape: AnswerShape, available: int) -> dict[str, Any]:
    """The hold's columns that keep `shape` and the credits remaining after the hold."""
    return {
        "answer_format": shape.format_code,
        "answer_tier": shape.tier_text,
        "answer_window": shape.window,
        "answer_limit": shape.limit,
        "answer_remaining": shape.remaining,
        "answer_available": available,
    }


class ServicesBackend:
    name = "services"

    def check(
        self,
        *,
        request_id: str,
        raw_key: str,
        digest: str | None,
        now: datetime,
        model: str | None = None,
    ) -> Check:
        """The replay of a request id, then the key, then the account (read only)."""
        held = (
            Hold.objects.filter(request_id=request_id)
            .values(
                "api_key_id",
                "api_key__digest",
                "api_key__previous_digest",
                "api_key__previous_expires_at",
                *_ANSWER_FIELDS,
            )
            .first()
        )
        if held is not None:
            # The same key replays, by its secret or its previous one in the grace period.
            previous = held["api_key__previous_expires_at"]
            if digest is not None and (
                held["api_key__digest"] == digest
                or (
                    held["api_key__previous_digest"] == digest
                    and previous is not None
                    and previous > now
                )
            ):
                return Check(Outcome.REPLAY, decision=decisions.replayed(_stored(held)))
            return Check(Outcome.CONFLICT)
        if digest is None:
            return Check(Outcome.BAD_KEY)
        key = api_key_resolve(raw_key, now=now)
        if key is None:
            return Check(Outcome.BAD_KEY)
        key_id, user_id = str(key.pk), str(key.user_id)
        account = CreditAccount.objects.filter(pk=key.user_id).first()
        if account is None:
            return Check(Outcome.NO_CREDIT, key_id, user_id)
        if account.next_event_at is not None and account.next_event_at <= now:
            # Expired holds still count in `reserved` and the key's `held` until released:
            # write what is due first (as the hold would), so the limits read the live holds.
            services.account_settle_due(user_id=key.user_id)
            account.refresh_from_db()
            key.refresh_from_db()
        balance = services.account_balance(account=account, now=now)
        outcome: Outcome = Outcome.OK
        if account.frozen_at is not None:
            outcome = Outcome.FROZEN
        elif balance.available < 1:
            outcome = Outcome.NO_CREDIT
        elif services.account_limit_exceeded(account=account, now=now):
            outcome = Outcome.ACCOUNT_LIMIT
        elif budgets.key_budget_exceeded(key, now):
            outcome = Outcome.KEY_BUDGET
        elif not budgets.model_allowed(key, model):
            outcome = Outcome.MODEL_NOT_ALLOWED
        return Check(outcome, key_id, user_id, balance.balance, balance.available)

    def _available(self, user_id: str) -> int:
        account = CreditAccount.objects.get(pk=UUID(user_id))
        return services.account_balance(account=account).available

    def hold(
        self,
        *,
        request_id: str,
        key_id: str,
        user_id: str,
        hold_id: str,
        shape: AnswerShape,
        now: datetime,
        expires_at: datetime,
        model: str | None = None,
    ) -> HoldOutcome:
        """services.hold_create, and what its answer is rebuilt from kept on the hold in the same
        transaction. The hold is made at `now` (its `created_at`, the instant of the answer)."""
        try:
            with transaction.atomic(durable=True):
                result = services.hold_create(
                    user_id=UUID(user_id),
                    request_id=request_id,
                    api_key_id=UUID(key_id),
                    ttl=expires_at - now,
                    model=model,
                    now=now,
                )
                hold = result.hold
                if not result.created:
                    return HoldOutcome(Outcome.REPLAY, decision=hold_replay(hold))
                Hold.objects.filter(pk=hold.pk).update(**_answer_columns(shape, result.available))
                decision = decisions.allowed_answer(
                    shape,
                    hold_id=str(hold.pk),
                    hold_expires_at=hold.expires_at,
                    user_id=user_id,
                    key_id=key_id,
                    now=now,
                    available_after=result.available,
                )
                return HoldOutcome(Outcome.OK, result.available, decision)
        except IdempotencyConflict:
            return HoldOutcome(Outcome.CONFLICT)
        except AccountFrozen:
            return HoldOutcome(Outcome.FROZEN, self._available(user_id))
        except InsufficientCredits:
            return HoldOutcome(Outcome.NO_CREDIT, self._available(user_id))
        except AccountLimitExceeded:
            return HoldOutcome(Outcome.ACCOUNT_LIMIT, self._available(user_id))
        except KeyBudgetExceeded:
            return HoldOutcome(Outcome.KEY_BUDGET, self._available(user_id))
        except ModelNotAllowed:
            return HoldOutcome(Outcome.MODEL_NOT_ALLOWED, self._available(user_id))

    def settle(
        self, *, request_id: str, commit: bool, usage: Usage, now: datetime
    ) -> SettleOutcome:
        """hold_commit / hold_release and, on the first settle only, the usage record, in one
        transaction (a concurrent second settle waits on the account lock, then replays)."""
        try:
            with transaction.atomic(durable=True):
                if commit:
                    result = services.hold_commit(request_id=request_id)
                else:
                    result = services.hold_release(request_id=request_id)
                hold = result.hold
                if result.replayed:
                    # What the first settle answered (before issue 23, in the stored answer).
                    first = (_json(hold.decision) or {}).get(decisions.LEGACY_SETTLE_KEY) or {}
                    available = hold.settled_available
                    if available is None:
                        available = first.get("credits_remaining", result.available)
                    return SettleOutcome(Outcome.REPLAY, hold.charged, available, hold.status)
                reason = usage.reason
                if commit and hold.charged == 0:
                    reason = HOLD_EXPIRED  # a late success that found no credit to charge
                Hold.objects.filter(pk=hold.pk).update(settled_available=result.available)
                UsageRecord.objects.create(
                    request_id=request_id,
                    account_id=hold.account_id,
                    api_key_id=hold.api_key_id,
                    model=usage.model,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    outcome="success" if commit else "failure",
                    reason=reason,
                    http_status=usage.http_status,
                    charged=hold.charged,
                    settled_at=hold.settled_at or now,
                )
                return SettleOutcome(Outcome.OK, hold.charged, result.available, hold.status)
        except HoldNotFound:
            return SettleOutcome(Outcome.NOT_FOUND)
        except HoldAlreadySettled:
            status = Hold.objects.filter(request_id=request_id).values_list("status", flat=True)
            return SettleOutcome(Outcome.CONFLICT, status=status.first())

    def settle_batch(self, *, items: Sequence[SettleItem], now: datetime) -> list[SettleOutcome]:
        """Each item settled as `settle` settles it, in order, each in its own transaction."""
        return [
            self.settle(request_id=item.request_id, commit=item.commit, usage=item.usage, now=now)
            for item in items
        ]


def _call(sql: str, params: Sequence[Any]) -> Any:
    """The one row of one SQL function call (`_rows`)."""
    return _rows(sql, params)[0]


def _rows(sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one SQL function call, in autocommit (or the caller's transaction).

    Through a plain psycopg cursor on Django's connection (server-side binding) rather than
    Django's cursor: measured at about 70 us of client CPU per call instead of 130 (Django's
    default client-side binding composes the query text in Python, and its wrapper adds a
    layer). Errors are still Django's (`wrap_database_errors`), so a lost database is a 503 as
    before. Whenever someone installed `connection.execute_wrapper` (instrumentation, query
    counting), Django's cursor is used so that nothing escapes it."""
    db = connections[DEFAULT_DB_ALIAS]  # one lookup of this thread's connection, not four
    if db.execute_wrappers:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    db.ensure_connection()
    with db.wrap_database_errors:
        raw = _raw_cursor(db.connection)
        raw.execute(sql, params)
        return raw.fetchall()


_cursors = threading.local()


def _raw_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """This thread's cursor on `conn`, made once per connection rather than once per call
    (issue 23: a psycopg cursor's set-up, its adapters map included, measured at about 9 us of
    the 34 us of client CPU a call of the gateway's SQL costs; best of 12 interleaved rounds).
    Django's connections belong to one thread, so a thread-local cursor has one user; a new
    connection (Django reconnected) gets a new cursor, and the old one goes with the old
    connection. Between calls it holds only the last call's one-row result."""
    cursor: psycopg.Cursor[Any] | None = getattr(_cursors, "cursor", None)
    if cursor is None or cursor.connection is not conn or cursor.closed:
        cursor = _cursors.cursor = psycopg.Cursor(conn)
    return cursor


class SqlBackend(ServicesBackend):
    """One PL/pgSQL call per step, in autocommit; the services when something is due."""

    name = "sql"

    def check(
        self,
        *,
        request_id: str,
        raw_key: str,
        digest: str | None,
        now: datetime,
        model: str | None = None,
    ) -> Check:
        outcome, key_id, user_id, balance, available, stored = _call(
            "SELECT * FROM gateway_authorize_check(%s, %s, %s, %s)",
            [request_id, digest, now, model],
        )
        if outcome == Outcome.DUE:
            return super().check(
                request_id=request_id, raw_key=raw_key, digest=digest, now=now, model=model
            )
        return Check(
            Outcome(outcome),
            str(key_id) if key_id is not None else None,
            str(user_id) if user_id is not None else None,
            balance or 0,
            available or 0,
            decisions.replayed(_json(stored)) if outcome == Outcome.REPLAY else None,
        )

    def hold(
        self,
        *,
        request_id: str,
        key_id: str,
        user_id: str,
        hold_id: str,
        shape: AnswerShape,
        now: datetime,
        expires_at: datetime,
        model: str | None = None,
    ) -> HoldOutcome:
        outcome, available, stored = _call(
            "SELECT * FROM gateway_hold_create(%s, %s, %s, %s, %s::smallint, %s, %s::smallint,"
            " %s::integer, %s::integer, %s, %s, %s)",
            [
                request_id,
                key_id,
                user_id,
                hold_id,
                *shape.sql_params,
                now,
                expires_at,
                model,
            ],
        )
        if outcome == Outcome.DUE:
            return super().hold(
                request_id=request_id,
                key_id=key_id,
                user_id=user_id,
                hold_id=hold_id,
                shape=shape,
                now=now,
                expires_at=expires_at,
                model=model,
            )
        decision = None
        if outcome == Outcome.OK:
            decision = decisions.allowed_answer(
                shape,
                hold_id=hold_id,
                hold_expires_at=expires_at,
                user_id=user_id,
                key_id=key_id,
                now=now,
                available_after=available,
            )
        elif outcome == Outcome.REPLAY:
            decision = decisions.replayed(_json(stored))
        return HoldOutcome(Outcome(outcome), available, decision)

    def authorize(
        self,
        *,
        request_id: str,
        digest: str,
        key_id: str,
        user_id: str,
        tier_min: int,
        tier_max: int | None,
        hold_id: str,
        shape: AnswerShape,
        now: datetime,
        expires_at: datetime,
        model: str | None = None,
    ) -> Fast:
        """`check` and `hold` in one round trip (`gateway_authorize`), for a request the limiter
        already counted under a guessed tier. Only `Outcome.OK` is final (with its answer); any
        other outcome wrote nothing and the caller decides afresh with `check` and `hold`."""
        outcome, balance, available = _call(
            "SELECT * FROM gateway_authorize(%s, %s, %s, %s, %s, %s, %s::smallint, %s,"
            " %s::smallint, %s::integer, %s::integer, %s, %s, %s)",
            [
                request_id,
                digest,
                key_id,
                tier_min,
                tier_max,
                hold_id,
                *shape.sql_params,
                now,
                expires_at,
                model,
            ],
        )
        if outcome != Outcome.OK:
            return Fast(Outcome(outcome), balance)
        decision = decisions.allowed_answer(
            shape,
            hold_id=hold_id,
            hold_expires_at=expires_at,
            user_id=user_id,
            key_id=key_id,
            now=now,
            available_after=available,
        )
        return Fast(Outcome(outcome), balance, decision)

    def settle(
        self, *, request_id: str, commit: bool, usage: Usage, now: datetime
    ) -> SettleOutcome:
        outcome, charged, available, status, event_id, auto_topup_user = _call(
            "SELECT * FROM gateway_settle(%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                request_id,
                commit,
                usage.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.reason,
                usage.http_status,
                now,
            ],
        )
        if outcome == Outcome.DUE:
            return super().settle(request_id=request_id, commit=commit, usage=usage, now=now)
        _announce(event_id, auto_topup_user)
        return SettleOutcome(Outcome(outcome), charged or 0, available or 0, status)

    def settle_batch(self, *, items: Sequence[SettleItem], now: datetime) -> list[SettleOutcome]:
        """Every item in one round trip (`gateway_settle_batch`: one transaction, a
        subtransaction per item, items ordered by account so that batches never deadlock).
        The items it leaves (`due`: something came due on the account first) are settled
        after its commit one by one, in the batch's order, as `settle` settles them."""
        if not items:
            return []
        rows = _rows(
            "SELECT * FROM gateway_settle_batch(%s::jsonb, %s)",
            [
                json.dumps(
                    [
                        {
                            "request_id": item.request_id,
                            "commit": item.commit,
                            "model": item.usage.model,
                            "prompt_tokens": item.usage.prompt_tokens,
                            "completion_tokens": item.usage.completion_tokens,
                            "reason": item.usage.reason,
                            "http_status": item.usage.http_status,
                        }
                        for item in items
                    ]
                ),
                now,
            ],
        )
        results: list[SettleOutcome | None] = [None] * len(items)
        for ord, outcome, charged, available, status, event_id, auto_topup_user in rows:
            if outcome != Outcome.DUE:
                results[ord] = SettleOutcome(Outcome(outcome), charged or 0, available or 0, status)
            _announce(event_id, auto_topup_user)
        for ord, item in enumerate(items):
            if results[ord] is not None:
                continue
            try:
                results[ord] = self.settle(
                    request_id=item.request_id, commit=item.commit, usage=item.usage, now=now
                )
            except DatabaseError as exc:
                # This item only: the others are settled already (committed above, or each in
                # its own transaction here), so the batch must still answer for them.
                cause = exc.__cause__
                results[ord] = SettleOutcome(Outcome.ERROR, status=getattr(cause, "sqlstate", None))
        return [result for result in results if result is not None]


def _announce(event_id: UUID | None, auto_topup_user: UUID | None) -> None:
    """What a settle's SQL reports besides its answer, told as the Python ledger tells it: a
    `credits.low` event it wrote (the dispatcher is kicked, as `event_record` does) and an
    account it stamped for an auto top-up (payments claims the stamp). In autocommit the
    function has committed already; inside a caller's transaction the receivers wait for its
    commit (on_commit)."""
    if event_id is not None:
        event_recorded.send(sender=Event, event_id=event_id)
    if auto_topup_user is not None:
        auto_topup_requested.send(sender=SqlBackend, user_id=auto_topup_user)


_services = ServicesBackend()
_sql = SqlBackend()
# Tests set this to "services" to run the PostgreSQL suite through the Python implementation.
FORCE: str | None = None


def get_backend() -> ServicesBackend:
    if FORCE == "services" or connection.vendor != "postgresql":
        return _services
    return _sql
