"""The SQL backend and the Python services, proven to make the same decisions and write the
same rows, on PostgreSQL.

Each Hypothesis example opens two twin accounts (same grants, same keys) and drives the same
random sequence through both: authorize (the one-call `gateway_authorize` under a guessed tier,
and the two-step check and hold), authorize again with the same or the other key, settle as a
success or a failure (again, and the other way), alone or in a batch (`settle_batch`), grants
with and without expiry, clawbacks, freezes, key revocations, low-balance and auto top-up
thresholds (the crossing's event and stamp), the sweep, and the clock moving past holds' and
lots' expiries. One
twin goes through `SqlBackend` (the PL/pgSQL functions, which hand the due cases to the
services), the other through `ServicesBackend`. Every answer is compared, and after every step
every row of both accounts (the account, its lots, ledger entries, holds with their stored
decisions, usage records and buckets, the keys' `last_used_at`, the outbox's events: the
`credits.low` that `gateway_settle` writes in SQL against the one `services._write_entry` writes,
with the low-balance threshold changed by a rule), with ids mapped to their twin's; and at the
end of each example the whole ledger reconciles. The clock is frozen between steps so that both
twins see the same instants. At least 200 examples per run (`EXAMPLES`).
"""

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from accounts.models import ApiKey, User
from accounts.secrets import digest as key_digest
from accounts.services import api_key_create, api_key_revoke, api_key_rotate, api_key_update
from credits import clock, services
from credits.gateway import backends
from credits.gateway.decisions import FORMATS, AnswerShape
from credits.gateway.models import UsageBucket, UsageRecord
from credits.gateway.outcomes import Outcome
from credits.models import CreditAccount, Event, Hold, LedgerEntry, Lot, LotSource
from credits.reconciliation import reconcile
from tests.factories import UserFactory

# CI runs at least this many examples (the issue asks for 200); about a minute on a quiet machine.
EXAMPLES = int(os.environ.get("DIFF_EXAMPLES", "200"))
STEPS = 25

TWINS = ("sql", "py")
LOT_EXPIRIES = [None, timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=1)]
HOLD_TTLS = [timedelta(seconds=10), timedelta(seconds=660)]
CLOCK_STEPS = [
    timedelta(seconds=1),
    timedelta(seconds=11),
    timedelta(seconds=31),
    timedelta(minutes=6),
    timedelta(minutes=12),
    timedelta(hours=2),
    timedelta(hours=20),  # crosses 00:00 UTC now and then: the day's counters start again
]
# (min, max) balance of the tier the one-call authorize guesses; a live balance outside it is
# RETIER and the two-step path decides.
GUESSED_TIERS = [(1, None), (1, 3), (4, None)]
MODELS = ["kimi-k2-0905", "other-model"]
# What the limiter counted, as the answer keeps it (issue 23: rebuilt on a replay): no tier, or a
# tier and the window its headers describe, in either format.
SHAPE = AnswerShape("openai", "1-100", 0, 20, 19)
SHAPES = st.one_of(
    st.builds(AnswerShape, st.sampled_from(FORMATS), st.none(), st.none(), st.none(), st.none()),
    st.builds(
        AnswerShape,
        st.sampled_from(FORMATS),
        st.sampled_from(["1-100", "101-1,000", "10,000+"]),
        st.integers(0, 2),
        st.integers(1, 100_000),
        st.integers(0, 100_000),
    ),
)


class FrozenClock:
    """`credits.clock.now` for this test: moves only when a rule moves it, so that both twins'
    rows carry the same instants."""

    def __init__(self) -> None:
        self.at = clock.now().replace(microsecond=0)

    def now(self) -> datetime:
        return self.at


@dataclass
class Twin:
    name: str
    user: User
    keys: list[tuple[ApiKey, str]] = field(default_factory=list)
    previous: dict[int, str] = field(default_factory=dict)  # key index -> secret before rotation

    @property
    def backend(self) -> backends.ServicesBackend:
        return backends.SqlBackend() if self.name == "sql" else backends.ServicesBackend()

    def request_id(self, suffix: str) -> str:
        return f"{self.name}-{suffix}"


def _twin(name: str, now: datetime) -> Twin:
    user = cast(User, UserFactory())
    services.account_open(user_id=user.pk)
    twin = Twin(name, user)
    twin.keys.append(api_key_create(user=user, name="main"))
    # The second key expires: the clock passing it turns it into a bad key.
    twin.keys.append(api_key_create(user=user, name="short", expires_at=now + timedelta(minutes=9)))
    return twin


# --- the rows of one twin, with its ids replaced by names both twins share ----------------------

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _decision(decision: Any, twin: Twin) -> Any:
    """An answer with its twin's ids replaced by names both twins share (its hold's left out)."""
    if not isinstance(decision, dict):
        return decision
    keys = {str(key.pk): f"key{n}" for n, (key, _) in enumerate(twin.keys)}
    named = {k: v for k, v in decision.items() if k != "hold_id"}
    if "key_id" in named:
        named["key_id"] = keys.get(named["key_id"], named["key_id"])
    if named.get("user_id") == str(twin.user.pk):
        named["user_id"] = "USER"
    return named


def _event_data(
    data: dict[str, Any], lot_names: dict[int, str], key_names: dict[Any, str]
) -> dict[str, Any]:
    """An event's data with its lot's or key's id replaced by its name (and a key's prefix,
    random in each twin, left out)."""
    lot, key = data.get("lot"), data.get("key")
    if isinstance(lot, dict):
        return {**data, "lot": {**lot, "id": lot_names[lot["id"]]}}
    if isinstance(key, dict):
        return {**data, "key": {"id": key_names[UUID(key["id"])], "name": key["name"]}}
    return data


def snapshot(twin: Twin) -> dict[str, Any]:
    user_id = twin.user.pk
    account = CreditAccount.objects.get(pk=user_id)
    lots = list(Lot.objects.filter(account_id=user_id).order_by("id"))
    lot_names = {lot.pk: f"lot{n}" for n, lot in enumerate(lots)}
    key_names: dict[Any, str] = {key.pk: f"key{n}" for n, (key, _) in enumerate(twin.keys)}
    prefix = f"{twin.name}-"
    holds = list(Hold.objects.filter(account_id=user_id))
    hold_names = {str(hold.pk): f"hold:{hold.request_id.removeprefix(prefix)}" for hold in holds}

    names = {**hold_names, **{str(pk): name for pk, name in key_names.items()}}

    def text(value: str, *, keys: bool = False) -> str:
        found = names if keys else hold_names
        value = re.sub(UUID_RE, lambda m: found.get(m.group(0), m.group(0)), value)
        value = re.sub(r"expire:lot:(\d+)", lambda m: f"expire:{lot_names[int(m[1])]}", value)
        return value.replace(str(user_id), "USER").replace(prefix, "")

    return {
        "account": (
            account.balance,
            account.reserved,
            account.consumed,
            account.next_event_at,
            account.frozen_at,
            account.frozen_reason,
            account.monthly_credit_limit,
            account.month_spent,
            account.month_start,
            account.low_balance_threshold,
            # Auto top-up (issue 19): the crossing's stamp, written by both implementations.
            account.auto_topup_threshold,
            account.auto_topup_requested_at,
        ),
        "lots": [
            (
                lot.source,
                lot.package,
                lot.granted,
                lot.remaining,
                lot.reserved,
                lot.expires_at,
                lot.expired_at,
                lot.created_at,
                lot.clawback_claimed,
                lot.clawback_owed,
                lot.clawback_uncollectable,
            )
            for lot in lots
        ],
        "entries": [
            (
                entry.kind,
                entry.amount,
                entry.balance_after,
                lot_names[entry.lot_id],
                text(entry.idempotency_key),
                text(entry.reference),
                entry.reason,
                entry.created_at,
            )
            for entry in LedgerEntry.objects.filter(account_id=user_id).order_by("id")
        ],
        "holds": sorted(
            (
                hold.request_id.removeprefix(prefix),
                lot_names[hold.lot_id],
                hold.amount,
                hold.status,
                hold.charged,
                hold.created_at,
                hold.expires_at,
                hold.settled_at,
                key_names.get(hold.api_key_id),
                # What a replay answers, rebuilt from the hold (issue 23), and the first
                # settle's answer kept for the settle's replay.
                repr(_decision(backends.hold_replay(hold), twin)),
                hold.decision,
                hold.settled_available,
            )
            for hold in holds
        ),
        "usage": sorted(
            (
                record.request_id.removeprefix(prefix),
                key_names.get(record.api_key_id),
                record.model,
                record.prompt_tokens,
                record.completion_tokens,
                record.outcome,
                record.reason,
                record.http_status,
                record.charged,
                record.settled_at,
            )
            for record in UsageRecord.objects.filter(account_id=user_id)
        ),
        "buckets": sorted(
            (
                key_names.get(bucket.api_key_id),
                bucket.model,
                bucket.hour,
                bucket.requests,
                bucket.credits,
                bucket.prompt_tokens,
                bucket.completion_tokens,
            )
            for bucket in UsageBucket.objects.filter(account_id=user_id)
        ),
        "events": sorted(
            (
                event.type,
                repr(_event_data(event.data, lot_names, key_names)),
                text(event.cause, keys=True),
                event.created_at,
                event.dispatched_at,
            )
            for event in Event.objects.filter(user_id=user_id)
        ),
        "keys": [
            (
                key_names[key.pk],
                key.last_used_at,
                key.budget_credits,
                key.budget_period,
                key.allowed_models,
                key.held,
                key.spent_day,
                key.spent_day_start,
                key.spent_month,
                key.spent_month_start,
                key.spent_total,
                key.previous_expires_at,
            )
            for key in ApiKey.objects.filter(user_id=user_id).order_by("created_at", "name")
        ],
    }


# --- one authorize, the way the views run it --------------------------------------------------


def authorize(
    twin: Twin,
    *,
    suffix: str,
    key: int,
    ttl: timedelta,
    tier: tuple[int, int | None],
    now: datetime,
    model: str = MODELS[0],
    previous: bool = False,
    shape: AnswerShape = SHAPE,
) -> tuple[Any, ...]:
    """What the views would decide (without the limiter, which is not the database's): the
    one-call path first for the SQL twin (only its OK is final), then check and hold. `shape`
    stands for what the limiter counted (a replay answers the first authorize's)."""
    request_id = twin.request_id(suffix)
    api_key, raw = twin.keys[key]
    if previous and key in twin.previous:
        raw = twin.previous[key]  # the secret before the key's last rotation
    digest = key_digest(raw)
    backend = twin.backend
    expires_at = now + ttl
    hold_id = str(uuid4())
    if isinstance(backend, backends.SqlBackend):
        fast = backend.authorize(
            request_id=request_id,
            digest=digest,
            key_id=str(api_key.pk),
            user_id=str(twin.user.pk),
            tier_min=tier[0],
            tier_max=tier[1],
            hold_id=hold_id,
            shape=shape,
            now=now,
            expires_at=expires_at,
            model=model,
        )
        if fast.outcome == Outcome.OK:
            assert fast.decision is not None
            _replayed_as(backend, fast.decision, request_id, raw, digest, now, model)
            return (Outcome.OK, fast.decision["credits_remaining"], _decision(fast.decision, twin))
    for _ in range(3):
        check = backend.check(
            request_id=request_id, raw_key=raw, digest=digest, now=now, model=model
        )
        if check.outcome != Outcome.OK:
            found = _decision(check.decision, twin)
            return (check.outcome, check.available, check.balance, found)
        assert check.key_id is not None and check.user_id is not None
        held = backend.hold(
            request_id=request_id,
            key_id=check.key_id,
            user_id=check.user_id,
            hold_id=hold_id,
            shape=shape,
            now=now,
            expires_at=expires_at,
            model=model,
        )
        if held.outcome == Outcome.OK:
            _replayed_as(backend, held.decision, request_id, raw, digest, now, model)
        if held.outcome != Outcome.RETRY:
            return (held.outcome, held.available, _decision(held.decision, twin))
    raise AssertionError("the request id kept changing")


def _replayed_as(
    backend: backends.ServicesBackend,
    first: dict[str, Any] | None,
    request_id: str,
    raw: str,
    digest: str,
    now: datetime,
    model: str,
) -> None:
    """The allowed answer is the one a retry gets at once (issue 23: rebuilt from the hold, by
    the SQL function's JSON on one twin, by the ORM on the other), and the one the hold's
    columns give."""
    replay = backend.check(request_id=request_id, raw_key=raw, digest=digest, now=now, model=model)
    assert replay.outcome == Outcome.REPLAY and replay.decision == first, (replay, first)
    assert backends.hold_replay(Hold.objects.get(request_id=request_id)) == first


class Differential(RuleBasedStateMachine):
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FROZEN
        self.clock.at = START
        self._atomic = transaction.atomic()
        # Like the test's own transaction (Django's TestCase marks it so): the durable entry
        # points (`transaction.atomic(durable=True)`) may run inside this savepoint.
        self._atomic._from_testcase = True  # type: ignore[attr-defined]
        self._atomic.__enter__()
        self.twins = [_twin(name, self.clock.at) for name in TWINS]
        self.grants = self.claws = 0

    def teardown(self) -> None:
        # Once per example (it reads the whole ledger): every balance, lot and reservation of
        # both twins is what their entries and holds say.
        assert reconcile() == []
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    def both(self, action: Any) -> Any:
        """Run `action(twin)` on each twin; their answers must be equal."""
        sql, py = (action(twin) for twin in self.twins)
        assert sql == py, f"SQL answered {sql!r}, the services {py!r}"
        return sql

    # --- rules ---------------------------------------------------------------------------------

    @initialize(
        amount=st.integers(1, 4),
        expiry=st.sampled_from(LOT_EXPIRIES),
        threshold=st.none() | st.integers(1, 4),
    )
    def fund(self, amount: int, expiry: timedelta | None, threshold: int | None) -> None:
        # A threshold within reach of these small balances, so that charges cross it often.
        self.set_threshold(threshold)
        self.grant(amount=amount, expiry=expiry)

    @rule(amount=st.integers(1, 4), expiry=st.sampled_from(LOT_EXPIRIES))
    def grant(self, amount: int, expiry: timedelta | None) -> None:
        self.grants += 1
        n, now = self.grants, self.clock.now()

        def grant(twin: Twin) -> tuple[int, int]:
            entry = services.credits_grant(
                user_id=twin.user.pk,
                amount=amount,
                source=LotSource.PURCHASE if expiry else LotSource.ADJUSTMENT,
                expires_at=now + expiry if expiry else None,
                idempotency_key=f"grant:{twin.name}-{n}",
            )
            return (entry.amount, entry.balance_after)

        self.both(grant)

    @rule(
        target=requests,
        key=st.sampled_from([0, 0, 0, 1]),
        ttl=st.sampled_from(HOLD_TTLS),
        tier=st.sampled_from(GUESSED_TIERS),
        model=st.sampled_from(MODELS),
        previous=st.booleans(),
        shape=SHAPES,
    )
    def authorize(
        self,
        key: int,
        ttl: timedelta,
        tier: tuple[int, int | None],
        model: str,
        previous: bool,
        shape: AnswerShape,
    ) -> str:
        suffix = uuid4().hex[:12]
        now = self.clock.now()
        self.both(
            lambda twin: authorize(
                twin,
                suffix=suffix,
                key=key,
                ttl=ttl,
                tier=tier,
                now=now,
                model=model,
                previous=previous,
                shape=shape,
            )
        )
        return suffix

    @rule(
        suffix=requests,
        key=st.sampled_from([0, 1]),
        tier=st.sampled_from(GUESSED_TIERS),
        shape=SHAPES,
    )
    def authorize_again(
        self, suffix: str, key: int, tier: tuple[int, int | None], shape: AnswerShape
    ) -> None:
        """A retry: the first answer again, whatever the limiter would count now (`shape`)."""
        now = self.clock.now()
        self.both(
            lambda twin: authorize(
                twin, suffix=suffix, key=key, ttl=HOLD_TTLS[1], tier=tier, now=now, shape=shape
            )
        )

    @rule(
        suffix=requests,
        success=st.booleans(),
        tokens=st.tuples(st.integers(0, 50), st.integers(0, 500)),
    )
    def settle(self, suffix: str, success: bool, tokens: tuple[int, int]) -> None:
        now = self.clock.now()
        usage = backends.Usage(
            model="kimi-k2-0905",
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            reason="" if success else "upstream_error",
            http_status=200 if success else 502,
        )
        self.both(
            lambda twin: twin.backend.settle(
                request_id=twin.request_id(suffix), commit=success, usage=usage, now=now
            )
        )

    @rule(
        settles=st.lists(
            st.tuples(requests, st.booleans(), st.integers(0, 500)), min_size=1, max_size=4
        )
    )
    def settle_batch(self, settles: list[tuple[str, bool, int]]) -> None:
        """A batch (issue 23): `gateway_settle_batch` (one call, a subtransaction per item,
        what comes due left to the services in the batch's order) against the services one by
        one; the same request may come twice, with either outcome."""
        now = self.clock.now()

        def items(twin: Twin) -> list[backends.SettleItem]:
            return [
                backends.SettleItem(
                    request_id=twin.request_id(suffix),
                    commit=success,
                    usage=backends.Usage(
                        model="kimi-k2-0905",
                        prompt_tokens=tokens,
                        completion_tokens=2 * tokens,
                        reason="" if success else "client_disconnected",
                        http_status=None,
                    ),
                )
                for suffix, success, tokens in settles
            ]

        self.both(lambda twin: twin.backend.settle_batch(items=items(twin), now=now))

    @rule(tier=st.sampled_from(GUESSED_TIERS), pairs=st.integers(1, 4))
    def spend(self, tier: tuple[int, int | None], pairs: int) -> None:
        """The hot path's commonest pair, authorize then a successful settle, a few times in
        one step: settles that charge (and cross the low-balance threshold) come often, not
        only when Hypothesis happens to settle an authorized request."""
        for _ in range(pairs):
            suffix = self.authorize(
                key=0, ttl=HOLD_TTLS[1], tier=tier, model=MODELS[0], previous=False, shape=SHAPE
            )
            self.settle(suffix=suffix, success=True, tokens=(1, 1))

    @rule(lot=st.integers(0, 20), amount=st.integers(1, 5))
    def claw_back(self, lot: int, amount: int) -> None:
        self.claws += 1
        n = self.claws

        def claw_back(twin: Twin) -> tuple[int | None, int, int]:
            lots = list(Lot.objects.filter(account_id=twin.user.pk).order_by("id"))
            result = services.credits_claw_back(
                user_id=twin.user.pk,
                lot_id=lots[lot % len(lots)].pk,
                claim_up_to=amount,
                idempotency_key=f"claw:{twin.name}-{n}",
            )
            entry = result.entry
            return (entry.amount if entry else None, result.owed, result.uncollectable)

        self.both(claw_back)

    @rule(frozen=st.booleans())
    def freeze(self, frozen: bool) -> None:
        for twin in self.twins:
            if frozen:
                services.account_freeze(user_id=twin.user.pk, reason="dispute")
            else:
                services.account_unfreeze(user_id=twin.user.pk)

    @rule(key=st.sampled_from([0, 1]))
    def revoke_key(self, key: int) -> None:
        for twin in self.twins:
            api_key_revoke(user=twin.user, key_id=twin.keys[key][0].pk)

    # Spend controls (issue 18): budgets, the monthly limit, allowed models, rotation.
    @rule(
        key=st.sampled_from([0, 1]),
        credits=st.none() | st.integers(0, 4),
        period=st.sampled_from(["day", "month", "total"]),
    )
    def set_budget(self, key: int, credits: int | None, period: str) -> None:
        budget = None if credits is None else {"credits": credits, "period": period}
        for twin in self.twins:
            if ApiKey.objects.live().filter(pk=twin.keys[key][0].pk).exists():
                api_key_update(user=twin.user, key_id=twin.keys[key][0].pk, budget=budget)

    @rule(key=st.sampled_from([0, 1]), models=st.sampled_from([None, MODELS[:1], []]))
    def set_models(self, key: int, models: list[str] | None) -> None:
        for twin in self.twins:
            if ApiKey.objects.live().filter(pk=twin.keys[key][0].pk).exists():
                api_key_update(user=twin.user, key_id=twin.keys[key][0].pk, allowed_models=models)

    @rule(limit=st.none() | st.integers(0, 6))
    def set_limit(self, limit: int | None) -> None:
        for twin in self.twins:
            services.account_limit_set(user_id=twin.user.pk, monthly_credit_limit=limit)

    # Notifications (issue 17): the balance crossing the threshold writes `credits.low`.
    @rule(threshold=st.none() | st.integers(0, 6))
    def set_threshold(self, threshold: int | None) -> None:
        for twin in self.twins:
            services.low_balance_threshold_set(user_id=twin.user.pk, threshold=threshold)

    @initialize(threshold=st.integers(1, 4))
    def auto_topup_on(self, threshold: int) -> None:
        # From the start, so that settles crossing it are common (a rule alone rarely came
        # before the right settle).
        self.set_auto_topup_threshold(threshold=threshold)

    @rule(threshold=st.none() | st.integers(1, 6))
    def set_auto_topup_threshold(self, threshold: int | None) -> None:
        # No payments configuration here: the stamp stays unclaimed (the kick waits for a
        # commit that never comes), so every crossing's stamp is compared.
        for twin in self.twins:
            services.auto_topup_threshold_set(user_id=twin.user.pk, threshold=threshold)

    @rule(tokens=st.tuples(st.integers(0, 50), st.integers(0, 500)))
    def charge_across_the_auto_topup_threshold(self, tokens: tuple[int, int]) -> None:
        """The threshold at the balance, then a request authorized and settled as a success:
        its charge crosses (a settle crossing was rare among the random rules)."""
        for twin in self.twins:
            balance = CreditAccount.objects.get(pk=twin.user.pk).balance
            services.auto_topup_threshold_set(user_id=twin.user.pk, threshold=max(balance, 1))
        suffix = uuid4().hex[:12]
        now = self.clock.now()
        self.both(
            lambda twin: authorize(
                twin, suffix=suffix, key=0, ttl=HOLD_TTLS[1], tier=GUESSED_TIERS[0], now=now
            )
        )
        self.settle(suffix=suffix, success=True, tokens=tokens)

    @rule(key=st.sampled_from([0, 1]), grace=st.sampled_from([0, 30, 600]))
    def rotate(self, key: int, grace: int) -> None:
        now = self.clock.now()
        for twin in self.twins:
            api_key, raw = twin.keys[key]
            if not ApiKey.objects.live().filter(pk=api_key.pk).exists():
                continue
            _, new = api_key_rotate(user=twin.user, key_id=api_key.pk, grace_seconds=grace, now=now)
            twin.previous[key] = raw
            twin.keys[key] = (api_key, new)

    @rule()
    def sweep(self) -> None:
        services.accounts_sweep()

    @rule(step=st.sampled_from(CLOCK_STEPS))
    def advance_clock(self, step: timedelta) -> None:
        self.clock.at += step

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def both_twins_hold_the_same_rows(self) -> None:
        sql, py = (snapshot(twin) for twin in self.twins)
        for part in sql:
            assert sql[part] == py[part], f"{part} differ"


FROZEN = FrozenClock()
START = FROZEN.at


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FrozenClock]:
    global START
    FROZEN.at = START = clock.now().replace(microsecond=0)
    monkeypatch.setattr(clock, "now", FROZEN.now)
    yield FROZEN


# Shrinking a failure needs more than the default five-minute timeout.
@pytest.mark.timeout(1800)
@pytest.mark.django_db
def test_the_sql_backend_and_the_services_decide_and_write_the_same(
    frozen_clock: FrozenClock,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the SQL backend exists on PostgreSQL only")
    run_state_machine_as_test(
        Differential,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
