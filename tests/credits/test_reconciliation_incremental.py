"""The incremental reconciliation (issue 23): from per-account checkpoints it finds what the full
run finds among the entries, accounts, lots and holds touched since, advances a checkpoint only
where everything agreed, and never past an entry a still-open transaction may yet commit below."""

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from celery.schedules import crontab
from django.conf import settings as django_settings
from django.db import DatabaseError, connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from credits import services, tasks
from credits.errors import HoldAlreadySettled, InsufficientCredits
from credits.models import (
    LedgerEntry,
    Lot,
    LotSource,
    ReconcileCheckpoint,
    ReconcileLotCheckpoint,
)
from credits.reconciliation import reconcile
from credits.reconciliation_incremental import (
    ReconcileBusy,
    reconcile_incremental,
)
from tests.credits.conftest import funded_user
from tests.credits.test_services_stateful import LedgerMachine
from tests.processes import database_url

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite runs the full reconciliation instead"
)


def _sql(sql: str, *params: Any) -> None:
    # Cached figures live in ordinary rows (only entries are append-only): a bad deploy or a
    # hand-edit could change them like this.
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))


def _spend(user_id: UUID, request_id: str) -> None:
    services.hold_create(user_id=user_id, request_id=request_id)
    services.hold_commit(request_id=request_id)


def _checkpoint(user_id: UUID) -> int | None:
    return (
        ReconcileCheckpoint.objects.filter(account_id=user_id)
        .values_list("entry_id", flat=True)
        .first()
    )


def _last_entry(user_id: UUID) -> int:
    return LedgerEntry.objects.filter(account_id=user_id).latest("id").pk


def _insert_entry(user_id: UUID, *, amount: int, balance_after: int, key: str) -> None:
    """An entry written behind the services' back (a bug, a hand-written INSERT): the
    append-only trigger allows inserts."""
    lot = Lot.objects.filter(account_id=user_id).earliest("id")
    _sql(
        "INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,"
        " idempotency_key, reference, reason, created_at)"
        " VALUES (%s, %s, 'charge', %s, %s, %s, '', '', now())",
        user_id,
        lot.pk,
        amount,
        balance_after,
        key,
    )


@pytest.fixture
def checkpointed() -> tuple[UUID, UUID]:
    """Two accounts with history, both checkpointed, then more history on both: (honest,
    user). One live hold on `user` keeps its reserved figures non-zero."""
    honest, user = funded_user((10, None)), funded_user((10, None), (5, None))
    for n in range(2):
        _spend(honest.pk, f"h-{n}")
        _spend(user.pk, f"u-{n}")
    first = reconcile_incremental()
    assert first.found == [] and first.advanced == 2
    assert _checkpoint(user.pk) == _last_entry(user.pk)
    _spend(honest.pk, "h-after")
    _spend(user.pk, "u-after")
    services.hold_create(user_id=user.pk, request_id="u-live")
    return honest.pk, user.pk


def _what(found: list, user_id: UUID) -> set[tuple[str, int, int]]:
    return {(d.what.split(" of ")[0], d.cached, d.computed) for d in found if d.user_id == user_id}


@pytest.mark.django_db
def test_the_first_run_checkpoints_every_account_at_its_last_entry_and_its_lots_there() -> None:
    user = funded_user((10, None), (5, None))
    _spend(user.pk, "r1")

    run = reconcile_incremental()

    assert run.found == [] and run.entries == 3 and run.advanced == 1
    checkpoint = ReconcileCheckpoint.objects.get(account_id=user.pk)
    assert (checkpoint.entry_id, checkpoint.balance, checkpoint.consumed) == (
        _last_entry(user.pk),
        14,
        1,
    )
    lots = dict(
        ReconcileLotCheckpoint.objects.filter(lot__account_id=user.pk).values_list(
            "lot_id", "remaining"
        )
    )
    assert sorted(lots.values()) == [5, 9]
    # The next run reads nothing new.
    assert reconcile_incremental().entries == 0


@pytest.mark.django_db
def test_an_agreeing_ledger_since_the_checkpoints_reconciles_and_the_checkpoints_advance(
    checkpointed: tuple[UUID, UUID],
) -> None:
    honest, user = checkpointed

    run = reconcile_incremental()

    assert run.found == [] == reconcile()
    assert run.entries == 2  # one charge on each account since the checkpoints
    assert _checkpoint(honest) == _last_entry(honest)
    assert _checkpoint(user) == _last_entry(user)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE credits_creditaccount SET balance = balance + 5 WHERE user_id = %s",
            {("balance", 17, 12)},
        ),
        (
            "UPDATE credits_creditaccount SET consumed = 7 WHERE user_id = %s",
            {("consumed", 7, 3)},
        ),
        (
            "UPDATE credits_creditaccount SET reserved = 0 WHERE user_id = %s",
            {("reserved", 0, 1)},
        ),
        (
            "UPDATE credits_lot SET remaining = remaining - 1"
            " WHERE id = (SELECT min(id) FROM credits_lot WHERE account_id = %s)",
            {("remaining", 6, 7)},
        ),
        (
            "UPDATE credits_lot SET reserved = 0"
            " WHERE id = (SELECT min(id) FROM credits_lot WHERE account_id = %s)",
            {("reserved", 0, 1)},
        ),
        (
            "UPDATE credits_hold SET charged = 0 WHERE request_id = 'u-after' AND account_id = %s",
            {("charged", 0, 1)},
        ),
        (
            "UPDATE credits_hold SET charged = 1 WHERE request_id = 'u-live' AND account_id = %s",
            {("charged", 1, 0)},
        ),
    ],
    ids=[
        "balance",
        "consumed",
        "reserved",
        "lot remaining",
        "lot reserved",
        "charged of a hold settled since",
        "charged of a live hold",
    ],
)
def test_a_wrong_cached_figure_since_the_checkpoint_is_found_as_the_full_run_finds_it(
    checkpointed: tuple[UUID, UUID], sql: str, expected: set[tuple[str, int, int]]
) -> None:
    honest, user = checkpointed
    before = _checkpoint(user)
    _sql(sql, user)

    run = reconcile_incremental()

    assert _what(run.found, user) == expected
    assert run.found == reconcile()
    assert {type(d.computed) for d in run.found} == {int}  # not Decimal, as SUM returns
    # Not advanced past the discrepancy; the honest account is.
    assert _checkpoint(user) == before
    assert _checkpoint(honest) == _last_entry(honest)


@pytest.mark.django_db
def test_a_broken_balance_after_chain_since_the_checkpoint_is_found(
    checkpointed: tuple[UUID, UUID],
) -> None:
    _, user = checkpointed
    # Balance 12 (15 granted, 3 charged): a charge of 1 written as if the balance had been 20,
    # with the caches moved as the services would have.
    _insert_entry(user, amount=-1, balance_after=19, key="bad-chain")
    _sql(
        "UPDATE credits_creditaccount SET balance = balance - 1, consumed = consumed + 1"
        " WHERE user_id = %s",
        user,
    )
    _sql(
        "UPDATE credits_lot SET remaining = remaining - 1"
        " WHERE id = (SELECT min(id) FROM credits_lot WHERE account_id = %s)",
        user,
    )
    entry = _last_entry(user)

    run = reconcile_incremental()

    assert [(d.user_id, d.what, d.cached, d.computed) for d in run.found] == [
        (user, f"balance_after of entry {entry}", 19, 11)
    ]
    assert run.found == reconcile()


@pytest.mark.django_db
def test_a_discrepancy_is_reported_run_after_run_until_it_is_put_right(
    checkpointed: tuple[UUID, UUID],
) -> None:
    _, user = checkpointed
    before = _checkpoint(user)
    _sql("UPDATE credits_creditaccount SET balance = balance + 1 WHERE user_id = %s", user)

    for _ in range(2):
        assert _what(reconcile_incremental().found, user) == {("balance", 13, 12)}
        assert _checkpoint(user) == before

    _sql("UPDATE credits_creditaccount SET balance = balance - 1 WHERE user_id = %s", user)
    assert reconcile_incremental().found == []
    assert _checkpoint(user) == _last_entry(user)


@pytest.mark.django_db
def test_an_account_opened_since_the_last_run_is_read_whole_and_marked_when_it_disagrees(
    checkpointed: tuple[UUID, UUID],
) -> None:
    honest, _ = checkpointed
    newcomer, idle = funded_user((4, None)).pk, funded_user().pk  # `idle` has no entry at all
    _sql("UPDATE credits_creditaccount SET balance = 5 WHERE user_id = %s", newcomer)

    run = reconcile_incremental()

    assert _what(run.found, newcomer) == {("balance", 5, 4)} and run.found == reconcile()
    stuck = ReconcileCheckpoint.objects.get(account_id=newcomer)
    assert (stuck.stuck, stuck.entry_id) == (True, 0)  # nothing of it verified yet
    assert not ReconcileCheckpoint.objects.get(account_id=idle).stuck
    assert not ReconcileCheckpoint.objects.get(account_id=honest).stuck

    _sql("UPDATE credits_creditaccount SET balance = 4 WHERE user_id = %s", newcomer)
    assert reconcile_incremental().found == []
    assert _checkpoint(newcomer) == _last_entry(newcomer)
    assert not ReconcileCheckpoint.objects.get(account_id=newcomer).stuck


@pytest.mark.django_db
def test_without_advancing_the_checkpoints_stay_where_they_were(
    checkpointed: tuple[UUID, UUID],
) -> None:
    _, user = checkpointed
    before = _checkpoint(user)

    run = reconcile_incremental(advance=False)

    assert run.found == [] and run.entries == 2 and run.advanced == 0
    assert _checkpoint(user) == before


@pytest.mark.django_db(transaction=True)
def test_an_entry_committed_after_a_higher_one_is_read_by_the_next_run() -> None:
    """Two real transactions: one takes an entry id and stays open, the other takes the next
    id and commits. A run in between must not checkpoint past the open one's id, or the entry
    it commits afterwards, below the checkpoint, would never be read."""
    user = funded_user((10, None))
    assert reconcile_incremental().found == []
    grant = _checkpoint(user.pk)
    lot = Lot.objects.get(account_id=user.pk)

    with psycopg.connect(database_url()) as late:
        # Behind the services' back (no account lock): a charge of 1, its id taken now.
        late.execute(
            "INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,"
            " idempotency_key, reference, reason, created_at)"
            " VALUES (%s, %s, 'charge', -1, 9, 'late', '', '', now())",
            [user.pk, lot.pk],
        )
        _spend(user.pk, "after")  # the next id, committed
        assert LedgerEntry.objects.filter(account_id=user.pk).count() == 2

        run = reconcile_incremental(settle_seconds=0.2)

        assert _checkpoint(user.pk) == grant
        assert run.found == [] and run.horizon is None
        late.commit()

    found = reconcile_incremental().found

    assert found == reconcile()
    assert _what(found, user.pk) >= {("balance", 9, 8), ("remaining", 9, 8)}


@pytest.mark.django_db(transaction=True)
def test_two_transactions_on_different_accounts_committed_out_of_order_are_both_checked() -> None:
    """The money operations' own case: ids on different accounts commit out of order all the
    time. A run while the lower one is open advances nothing; the next one reads both."""
    first, second = funded_user((10, None)), funded_user((10, None))
    assert reconcile_incremental().found == []

    with psycopg.connect(database_url()) as open_one:
        # A money operation in progress on `first`: its account locked, its entry inserted.
        open_one.execute(
            "SELECT 1 FROM credits_creditaccount WHERE user_id = %s FOR UPDATE", [first.pk]
        )
        lot = Lot.objects.get(account_id=first.pk)
        open_one.execute(
            "INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,"
            " idempotency_key, reference, reason, created_at)"
            " VALUES (%s, %s, 'adjust', -1, 9, 'open-one', '', '', now())",
            [first.pk, lot.pk],
        )
        _spend(second.pk, "second")  # a higher id, committed first
        assert reconcile_incremental(settle_seconds=0.2).horizon is None
        assert _checkpoint(first.pk) == _last_entry(first.pk)  # its grant: not moved
        open_one.commit()  # without moving the caches: a discrepancy the next run must see

    found = reconcile_incremental().found

    assert _what(found, first.pk) >= {("balance", 10, 9)}
    assert found == reconcile()
    assert _checkpoint(second.pk) == _last_entry(second.pk)


@pytest.mark.django_db(transaction=True)
def test_a_second_advancing_run_while_one_is_running_fails_at_once() -> None:
    funded_user((10, None))
    with psycopg.connect(database_url()) as other:
        other.execute("LOCK TABLE credits_reconcilecheckpoint IN SHARE ROW EXCLUSIVE MODE")
        with pytest.raises(ReconcileBusy):
            reconcile_incremental()
    assert reconcile_incremental().found == []


@pytest.mark.django_db
def test_the_nightly_task_logs_each_discrepancy_and_the_beat_runs_it_every_night(
    checkpointed: tuple[UUID, UUID], caplog: pytest.LogCaptureFixture
) -> None:
    _, user = checkpointed
    _sql("UPDATE credits_creditaccount SET consumed = 7 WHERE user_id = %s", user)

    assert tasks.reconcile_incremental() == 1
    assert f"ledger discrepancy: {user}: consumed is 7, the ledger says 3" in caplog.text
    assert tasks.reconcile_full() == 1

    beat = django_settings.CELERY_BEAT_SCHEDULE
    assert beat["reconcile-incremental"]["task"] == "credits.tasks.reconcile_incremental"
    assert str(beat["reconcile-incremental"]["schedule"]) == str(crontab(hour=3, minute=15))
    assert beat["reconcile-full"]["task"] == "credits.tasks.reconcile_full"


# --- equivalence with the full run on random histories --------------------------------------


class IncrementalLedgerMachine(LedgerMachine):
    """The ledger machine of `test_services_stateful` (every operation, expiries, claw-backs,
    sweeps, late commits, through the services) with incremental runs at random points: they
    advance the checkpoints, and after every step the incremental run from wherever they are
    agrees with the full one (which the base machine checks against the spec)."""

    @rule()
    def reconcile_incrementally(self) -> None:
        assert reconcile_incremental().found == []

    @invariant()
    def the_incremental_run_finds_what_the_full_run_finds(self) -> None:
        assert reconcile_incremental(advance=False).found == reconcile()


class TamperingMachine(RuleBasedStateMachine):
    """Random honest operations, incremental runs and tampering of every kind the incremental
    run covers (a cached figure of an account or lot, a live hold's `charged`, an entry
    inserted behind the services' back with any `balance_after`): after every step the
    incremental run from the checkpoints finds exactly what the full run finds."""

    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic._from_testcase = True  # type: ignore[attr-defined]
        self._atomic.__enter__()
        self.users = [funded_user((20, None), (5, None)).pk for _ in range(3)]
        self.tampered_holds: set[str] = set()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    def _try(self, operation: Any) -> Any:
        # After tampering, an operation may meet a CHECK (reserved above the balance, say):
        # refused, it writes nothing, as in production.
        try:
            with transaction.atomic():
                return operation()
        except (DatabaseError, InsufficientCredits, HoldAlreadySettled):
            return None

    @rule(target=holds, n=st.integers(0, 2))
    def hold(self, n: int) -> Any:
        request_id = f"req-{uuid4()}"
        done = self._try(lambda: services.hold_create(user_id=self.users[n], request_id=request_id))
        return request_id if done else multiple()

    @rule(request_id=consumes(holds), commit=st.booleans())
    def settle(self, request_id: str, commit: bool) -> None:
        if request_id in self.tampered_holds:
            return  # ended, it would be a settled hold with a wrong `charged`: the full run's
        call = services.hold_commit if commit else services.hold_release
        self._try(lambda: call(request_id=request_id))

    @rule(n=st.integers(0, 2), amount=st.integers(1, 9))
    def grant(self, n: int, amount: int) -> None:
        self._try(
            lambda: services.credits_grant(
                user_id=self.users[n],
                amount=amount,
                source=LotSource.PURCHASE,
                idempotency_key=f"grant:{uuid4()}",
            )
        )

    @rule(advance=st.booleans())
    def reconcile_incrementally(self, advance: bool) -> None:
        reconcile_incremental(advance=advance)

    @rule(
        n=st.integers(0, 2),
        column=st.sampled_from(["balance", "consumed", "reserved"]),
        by=st.integers(-3, 3).filter(bool),
    )
    def tamper_account(self, n: int, column: str, by: int) -> None:
        self._try(
            lambda: _sql(
                f"UPDATE credits_creditaccount SET {column} = {column} + %s WHERE user_id = %s",
                by,
                self.users[n],
            )
        )

    @rule(
        n=st.integers(0, 2),
        column=st.sampled_from(["remaining", "reserved"]),
        by=st.integers(-3, 3).filter(bool),
    )
    def tamper_lot(self, n: int, column: str, by: int) -> None:
        self._try(
            lambda: _sql(
                f"UPDATE credits_lot SET {column} = {column} + %s"
                " WHERE id = (SELECT min(id) FROM credits_lot WHERE account_id = %s)",
                by,
                self.users[n],
            )
        )

    @rule(request_id=holds)
    def tamper_live_hold(self, request_id: str) -> None:
        self.tampered_holds.add(request_id)
        _sql(
            "UPDATE credits_hold SET charged = 1 WHERE request_id = %s AND status = 'live'",
            request_id,
        )

    @rule(n=st.integers(0, 2), amount=st.integers(-3, 3).filter(bool), after=st.integers(0, 40))
    def insert_entry(self, n: int, amount: int, after: int) -> None:
        lot = Lot.objects.filter(account_id=self.users[n]).earliest("id")
        _sql(
            "INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,"
            " idempotency_key, reference, reason, created_at)"
            " VALUES (%s, %s, 'adjust', %s, %s, %s, '', '', now())",
            self.users[n],
            lot.pk,
            amount,
            after,
            f"behind-the-back:{uuid4()}",
        )

    @invariant()
    def the_incremental_run_finds_what_the_full_run_finds(self) -> None:
        assert reconcile_incremental(advance=False).found == reconcile()


MACHINE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(1200)
@pytest.mark.django_db
def test_random_histories_with_incremental_runs_agree_with_the_full_run() -> None:
    run_state_machine_as_test(IncrementalLedgerMachine, settings=MACHINE_SETTINGS)


@pytest.mark.timeout(1200)
@pytest.mark.django_db
def test_random_tampering_is_found_by_the_incremental_run_as_by_the_full_one() -> None:
    run_state_machine_as_test(TamperingMachine, settings=MACHINE_SETTINGS)
