"""Random sequences of every money operation and clock move across several accounts, checked after
every step against the whole ledger (reconcile) and against a pure-Python model of the spec:

- balance = unexpired lots' credit + credit that live holds took from lots expired since;
- reserved = the live holds; available = balance - reserved;
- holds take one lot in burn-down order; a live hold's commit charges its lot; a commit after the
  hold's expiry charges available credit if any lot can cover it, else 0;
- a claw-back claims a lot up to a total: the unheld credit is taken at once, the held credit is
  owed and taken as each hold is released or expires, a committed hold's share is uncollectable;
- the outbox (issue 17): exactly one `credits.low` per entry that takes the balance from at least
  the account's threshold (changed by a rule now and then, NULL included) to below it, one
  `credits.expired` per expire entry, nothing else (holds write none), and `event_recorded`
  sent for each, by the SQL backend too.

The machine runs twice: holds made and settled by the services, and (`SqlLedgerMachine`) by the
gateway's SQL backend; `tests/gateway/test_differential.py` compares the two row by row.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from accounts.models import User
from accounts.services import api_key_create
from credits import clock, services
from credits.errors import HoldAlreadySettled, IdempotencyConflict, InsufficientCredits
from credits.gateway import backends
from credits.gateway.decisions import AnswerShape
from credits.gateway.outcomes import Outcome
from credits.models import (
    CreditAccount,
    EntryKind,
    Event,
    EventType,
    Hold,
    LedgerEntry,
    Lot,
    LotSource,
)
from credits.reconciliation import reconcile
from credits.signals import event_recorded
from tests.credits.conftest import assert_every_lot_explained, funded_user

EXPIRIES = [
    None,
    timedelta(seconds=30),
    timedelta(minutes=5),
    timedelta(hours=1),
    timedelta(days=1),
]
TTLS = [timedelta(seconds=10), timedelta(seconds=660)]
STEPS = [
    timedelta(seconds=1),
    timedelta(seconds=20),
    timedelta(minutes=4),
    timedelta(minutes=6),
    timedelta(hours=2),
]


@dataclass
class ModelLot:
    id: int
    remaining: int
    expires_at: datetime | None
    granted: int = 0
    claimed: int = 0
    owed: int = 0
    uncollectable: int = 0

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass
class ModelHold:
    request_id: str
    account: int
    lot_id: int
    amount: int
    expires_at: datetime
    status: str = "live"  # live, committed, released
    charged: int = 0

    def live(self, now: datetime) -> bool:
        return self.status == "live" and now < self.expires_at


@dataclass
class ModelAccount:
    user_id: UUID
    lots: dict[int, ModelLot] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    grants = Bundle("grants")

    def __init__(self) -> None:
        super().__init__()
        clock.reset()
        # Each example runs in a savepoint rolled back at its end: a clean ledger every time.
        self._atomic = transaction.atomic()
        # Like the test's own transaction (Django's TestCase marks it so): the durable entry
        # points (`transaction.atomic(durable=True)`) may run inside this savepoint.
        self._atomic._from_testcase = True  # type: ignore[attr-defined]
        self._atomic.__enter__()
        self.accounts = [ModelAccount(funded_user().pk) for _ in range(3)]
        self.model_holds: dict[str, ModelHold] = {}
        # The outbox: each account's threshold, the events its entries must have written (cause
        # -> data), the last entry checked, and the ids `event_recorded` announced.
        self.thresholds: list[int | None] = [10] * len(self.accounts)
        self.expected_events: dict[str, dict] = {}
        self.last_entry = LedgerEntry.objects.order_by("-id").values_list("id", flat=True).first()
        self._expect_events()
        self.announced: set[UUID] = set()
        event_recorded.connect(self._announced, dispatch_uid="stateful-machine")

    def teardown(self) -> None:
        for model in self.accounts:  # once per example: costly, and reconcile covers most of it
            assert_every_lot_explained(model.user_id)
        event_recorded.disconnect(dispatch_uid="stateful-machine")
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)
        clock.reset()

    def _announced(self, sender: object, event_id: UUID, **kwargs: object) -> None:
        self.announced.add(event_id)

    def _expect_events(self) -> None:
        """The events the entries written since the last look call for, under the thresholds
        in force when they were written (a threshold changes only in `set_threshold`)."""
        owner = {model.user_id: n for n, model in enumerate(self.accounts)}
        for entry in LedgerEntry.objects.filter(
            account_id__in=list(owner), id__gt=self.last_entry or 0
        ).order_by("id"):
            threshold = self.thresholds[owner[entry.account_id]]
            before = entry.balance_after - entry.amount
            if threshold is not None and before >= threshold > entry.balance_after:
                self.expected_events[f"credits.low:{entry.idempotency_key}"] = {
                    "balance": entry.balance_after,
                    "threshold": threshold,
                }
            if entry.kind == EntryKind.EXPIRE:
                self.expected_events[f"credits.expired:{entry.idempotency_key}"] = {
                    "amount": -entry.amount
                }
            self.last_entry = entry.pk

    # --- the model ---------------------------------------------------------------------------

    def _live_holds(self, n: int, now: datetime) -> list[ModelHold]:
        self._end_expired_holds(now)
        return [h for h in self.model_holds.values() if h.account == n and h.live(now)]

    def _held(self, lot: ModelLot) -> int:
        return sum(
            h.amount for h in self.model_holds.values() if h.lot_id == lot.id and h.status == "live"
        )

    def _hold_ends(self, hold: ModelHold, now: datetime) -> None:
        """A live hold is released or expires: its credit returns to its lot, where an owed
        claw-back takes it (or, on an expired lot, the debt ends with the expired credit)."""
        lot = self.accounts[hold.account].lots[hold.lot_id]
        hold.status = "ending"  # no longer counted as held below
        if lot.expired(now):
            lot.owed = min(lot.owed, self._held(lot))
        else:
            take = min(lot.owed, hold.amount)
            lot.owed -= take
            lot.remaining -= take

    def _end_expired_holds(self, now: datetime) -> None:
        """Holds past their expiry end as the ledger's reads and next operation see them."""
        for hold in self.model_holds.values():
            if hold.status == "live" and now >= hold.expires_at:
                self._hold_ends(hold, now)
                hold.status = "expired"

    def _unheld(self, n: int, lot: ModelLot, now: datetime) -> int:
        held = sum(h.amount for h in self._live_holds(n, now) if h.lot_id == lot.id)
        return lot.remaining - held

    def _burn_down(self, n: int, now: datetime) -> list[ModelLot]:
        lots = [
            lot
            for lot in self.accounts[n].lots.values()
            if not lot.expired(now) and self._unheld(n, lot, now) > 0
        ]
        return sorted(lots, key=lambda lot: (lot.expires_at is None, lot.expires_at or now, lot.id))

    def _expected(self, n: int, now: datetime) -> services.Balance:
        lots = self.accounts[n].lots
        balance = sum(lot.remaining for lot in lots.values() if not lot.expired(now))
        live = self._live_holds(n, now)
        balance += sum(h.amount for h in live if lots[h.lot_id].expired(now))
        return services.Balance(balance, sum(h.amount for h in live))

    def _fitting_lot(self, n: int, amount: int, now: datetime) -> ModelLot | None:
        return next(
            (lot for lot in self._burn_down(n, now) if self._unheld(n, lot, now) >= amount), None
        )

    # --- rules ---------------------------------------------------------------------------------

    @initialize(expiry=st.sampled_from(EXPIRIES[1:]), amount=st.integers(1, 6))
    def fund_every_account(self, expiry: timedelta, amount: int) -> None:
        # Something to spend from the first step: one expiring lot, one that never expires.
        for n in range(len(self.accounts)):
            self.grant(n=n, amount=amount, expiry=expiry)
            self.grant(n=n, amount=amount, expiry=None)

    @rule(
        target=grants,
        n=st.integers(0, 2),
        amount=st.integers(1, 12),
        expiry=st.sampled_from(EXPIRIES),
    )
    def grant(self, n: int, amount: int, expiry: timedelta | None) -> tuple[int, str, int]:
        now = clock.now()
        key = f"grant:{uuid4()}"
        entry = services.credits_grant(
            user_id=self.accounts[n].user_id,
            amount=amount,
            source=LotSource.PURCHASE,
            idempotency_key=key,
            expires_at=now + expiry if expiry else None,
        )
        self.accounts[n].lots[entry.lot_id] = ModelLot(
            entry.lot_id, amount, entry.lot.expires_at, granted=amount
        )
        return (n, key, amount)

    @rule(grant=grants, other_amount=st.booleans())
    def repeat_grant(self, grant: tuple[int, str, int], other_amount: bool) -> None:
        n, key, amount = grant
        before = LedgerEntry.objects.count()
        call = {
            "user_id": self.accounts[n].user_id,
            "amount": amount + 1 if other_amount else amount,
            "source": LotSource.PURCHASE,
            "idempotency_key": key,
        }
        if other_amount:
            with pytest.raises(IdempotencyConflict):
                services.credits_grant(**call)  # type: ignore[arg-type]
        else:
            assert services.credits_grant(**call).idempotency_key == key  # type: ignore[arg-type]
        # A repeat writes nothing, not even a due expiry (the conflict rolls it back; the
        # replay runs after the account was settled, so its expiries are model-neutral).
        if other_amount:
            assert LedgerEntry.objects.count() == before

    @rule(
        target=holds,
        n=st.integers(0, 2),
        amount=st.integers(1, 3),
        ttl=st.sampled_from(TTLS),
    )
    def hold(self, n: int, amount: int, ttl: timedelta) -> object:
        amount = min(amount, self.max_hold)
        now = clock.now()
        request_id = f"req-{uuid4()}"
        lot = self._fitting_lot(n, amount, now)
        held = self._hold_create(n, request_id=request_id, amount=amount, ttl=ttl)
        if held is None:
            assert lot is None, "refused a hold the model can cover"
            return multiple()
        hold, available = held
        assert lot is not None, "allowed a hold the model cannot cover"
        assert hold.lot_id == lot.id, "not the burn-down order"
        self.model_holds[request_id] = ModelHold(request_id, n, lot.id, amount, hold.expires_at)
        assert available == self._expected(n, now).available
        return request_id

    # --- the two calls the backends make differently (see SqlLedgerMachine) ------------------

    max_hold = 3

    def _hold_create(
        self, n: int, *, request_id: str, amount: int, ttl: timedelta
    ) -> tuple[Hold, int] | None:
        """The hold and the available credit after it, or None when it was refused."""
        try:
            result = services.hold_create(
                user_id=self.accounts[n].user_id, request_id=request_id, amount=amount, ttl=ttl
            )
        except InsufficientCredits:
            return None
        return result.hold, result.available

    def _hold_settle(self, request_id: str, *, commit: bool) -> tuple[bool, int, int]:
        """(replayed, charged, available); HoldAlreadySettled for the other outcome."""
        call = services.hold_commit if commit else services.hold_release
        result = call(request_id=request_id)
        return result.replayed, result.charged, result.available

    def _settle(self, request_id: str, commit: bool) -> None:
        now = clock.now()
        self._end_expired_holds(now)  # as the settle's own transaction does first
        hold = self.model_holds[request_id]
        wanted = "committed" if commit else "released"
        if hold.status in ("committed", "released"):
            if hold.status != wanted:
                with pytest.raises(HoldAlreadySettled):
                    self._hold_settle(request_id, commit=commit)
                return
            replayed, charged, _ = self._hold_settle(request_id, commit=commit)
            assert (replayed, charged) == (True, hold.charged)
            return
        lots = self.accounts[hold.account].lots
        if hold.live(now):
            expected = hold.amount if commit else 0
            lot = lots[hold.lot_id]
            if commit:
                lot.remaining -= hold.amount
                hold.status = "ending"
                spent = max(lot.owed - self._held(lot), 0)  # owed credit that is now spent
                lot.owed -= spent
                lot.uncollectable += spent
            else:
                self._hold_ends(hold, now)
        else:
            # Ended by its expiry (above): its credit went back to its lot (gone if that expired).
            late_lot = self._fitting_lot(hold.account, hold.amount, now) if commit else None
            expected = hold.amount if late_lot is not None else 0
            if late_lot is not None:
                late_lot.remaining -= hold.amount
        hold.status, hold.charged = wanted, expected
        replayed, charged, available = self._hold_settle(request_id, commit=commit)
        assert (replayed, charged) == (False, expected)
        assert available == self._expected(hold.account, now).available

    @rule(request_id=holds)
    def commit(self, request_id: str) -> None:
        self._settle(request_id, commit=True)

    @rule(request_id=holds)
    def release(self, request_id: str) -> None:
        self._settle(request_id, commit=False)

    @rule(request_id=consumes(holds), commit=st.booleans())
    def settle_once_more(self, request_id: str, commit: bool) -> None:
        self._settle(request_id, commit=commit)

    @rule(n=st.integers(0, 2), amount=st.integers(-15, 15).filter(bool))
    def adjust(self, n: int, amount: int) -> None:
        now = clock.now()
        call = {
            "user_id": self.accounts[n].user_id,
            "amount": amount,
            "reason": "property test",
            "idempotency_key": f"adjust:{uuid4()}",
        }
        if amount > 0:
            entry = services.credits_adjust(**call)[0]  # type: ignore[arg-type]
            self.accounts[n].lots[entry.lot_id] = ModelLot(
                entry.lot_id, amount, None, granted=amount
            )
            return
        available = self._expected(n, now).available
        if -amount > available:
            before = LedgerEntry.objects.count()
            with pytest.raises(InsufficientCredits):
                services.credits_adjust(**call)  # type: ignore[arg-type]
            assert LedgerEntry.objects.count() == before
            return
        services.credits_adjust(**call)  # type: ignore[arg-type]
        wanted = -amount
        for lot in self._burn_down(n, now):
            take = min(wanted, self._unheld(n, lot, now))
            lot.remaining -= take
            wanted -= take
            if not wanted:
                break
        assert wanted == 0

    @rule(n=st.integers(0, 2), pick=st.integers(0, 50), up_to=st.integers(1, 15))
    def claw_back(self, n: int, pick: int, up_to: int) -> None:
        lots = list(self.accounts[n].lots.values())
        if not lots:
            return
        now = clock.now()
        lot = lots[pick % len(lots)]
        claim = max(min(up_to, lot.granted) - lot.claimed, 0)
        take = owed = 0
        if claim and not lot.expired(now):
            take = min(claim, self._unheld(n, lot, now))
            owed = min(claim - take, self._held(lot) - lot.owed)
        result = services.credits_claw_back(
            user_id=self.accounts[n].user_id,
            lot_id=lot.id,
            claim_up_to=up_to,
            idempotency_key=f"claw:{uuid4()}",
        )
        assert (result.entry.amount if result.entry else 0) == -take
        assert (result.owed, result.uncollectable) == (owed, claim - take - owed)
        lot.remaining -= take
        lot.claimed += claim
        lot.owed += owed
        lot.uncollectable += claim - take - owed

    @rule(n=st.integers(0, 2), count=st.integers(1, 5))
    def spend(self, n: int, count: int) -> None:
        """A few holds committed at once, as the gateway's pairs do: charges that cross the
        low-balance threshold come often (through the SQL backend in SqlLedgerMachine)."""
        for _ in range(count):
            request_id = self.hold(n=n, amount=1, ttl=TTLS[1])
            if not isinstance(request_id, str):
                return  # refused: nothing left to spend
            self._settle(request_id, commit=True)

    @rule(n=st.integers(0, 2), threshold=st.none() | st.integers(0, 15))
    def set_threshold(self, n: int, threshold: int | None) -> None:
        # Whatever is due is written first, under the old threshold (as the setter does).
        services.account_settle_due(user_id=self.accounts[n].user_id)
        self._expect_events()
        services.low_balance_threshold_set(user_id=self.accounts[n].user_id, threshold=threshold)
        self.thresholds[n] = threshold

    @rule()
    def sweep(self) -> None:
        services.accounts_sweep()

    @rule(step=st.sampled_from(STEPS))
    def advance_clock(self, step: timedelta) -> None:
        clock.advance(step)

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def the_ledger_reconciles_and_matches_the_model(self) -> None:
        assert reconcile() == []
        now = clock.now()
        for n, model in enumerate(self.accounts):
            account = CreditAccount.objects.get(pk=model.user_id)
            assert services.account_balance(account=account, now=now) == self._expected(n, now)

    @invariant()
    def the_outbox_holds_one_event_per_crossing_and_per_expiry(self) -> None:
        self._expect_events()
        # The ledger's own events (the SQL machine's key adds a `key.created`).
        events = Event.objects.filter(
            user_id__in=[model.user_id for model in self.accounts], type__startswith="credits."
        )
        found = {}
        for event in events:
            assert event.type in (EventType.CREDITS_LOW, EventType.CREDITS_EXPIRED), event
            data = event.data
            if event.type == EventType.CREDITS_EXPIRED:
                data = {"amount": data["amount"]}
            found[event.cause] = data
        assert found == self.expected_events
        # Every event written was announced. (Announced ones may be missing: a refused
        # operation rolls back what it wrote before refusing, an expiry say, and the receivers
        # act only on commit.)
        assert {event.pk for event in events} <= self.announced

    @invariant()
    def every_claw_back_is_where_the_model_says(self) -> None:
        self._end_expired_holds(clock.now())
        for model in self.accounts:
            for lot in Lot.objects.filter(account_id=model.user_id, pk__in=list(model.lots)):
                expected = model.lots[lot.pk]
                assert (lot.clawback_claimed, lot.clawback_uncollectable) == (
                    expected.claimed,
                    expected.uncollectable,
                )
                # Owed credit of an ended hold is taken when the ledger writes the ending.
                assert lot.clawback_owed >= expected.owed


class SqlLedgerMachine(LedgerMachine):
    """The same machine with holds made and settled by the gateway's SQL backend (the PL/pgSQL
    functions, which hand what has come due to the services), as the hot path does: one credit
    per hold, under an API key of the account."""

    max_hold = 1

    def __init__(self) -> None:
        super().__init__()
        self.keys = [
            api_key_create(user=User.objects.get(pk=model.user_id), name="gateway")[0]
            for model in self.accounts
        ]

    def _hold_create(
        self, n: int, *, request_id: str, amount: int, ttl: timedelta
    ) -> tuple[Hold, int] | None:
        now = clock.now()
        held = backends.SqlBackend().hold(
            request_id=request_id,
            key_id=str(self.keys[n].pk),
            user_id=str(self.accounts[n].user_id),
            hold_id=str(uuid4()),
            shape=AnswerShape("openai", None, None, None, None),
            now=now,
            expires_at=now + ttl,
        )
        if held.outcome == Outcome.NO_CREDIT:
            return None
        assert held.outcome == Outcome.OK, held
        assert held.available is not None
        return Hold.objects.get(request_id=request_id), held.available

    def _hold_settle(self, request_id: str, *, commit: bool) -> tuple[bool, int, int]:
        usage = backends.Usage("kimi-k2-0905", 1, 1, "", 200 if commit else 502)
        result = backends.SqlBackend().settle(
            request_id=request_id, commit=commit, usage=usage, now=clock.now()
        )
        if result.outcome == Outcome.CONFLICT:
            raise HoldAlreadySettled(request_id)
        assert result.outcome in (Outcome.OK, Outcome.REPLAY), result
        return result.outcome == Outcome.REPLAY, result.charged, result.available


SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# About 90 s when it passes; on a failure Hypothesis shrinks, which needs more than the default
# five-minute timeout to print a minimal sequence.
@pytest.mark.timeout(1200)
@pytest.mark.django_db
def test_random_sequences_of_ledger_operations_keep_the_ledger_and_the_spec_in_agreement() -> None:
    run_state_machine_as_test(LedgerMachine, settings=SETTINGS)


@pytest.mark.timeout(1200)
@pytest.mark.django_db
def test_the_same_sequences_with_holds_through_the_sql_backend_keep_the_same_agreement() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the SQL backend exists on PostgreSQL only")
    run_state_machine_as_test(SqlLedgerMachine, settings=SETTINGS)
