"""Real races on real PostgreSQL: threads released together by a barrier, each with its own
database connection (closed at the thread's end), on committed data (transaction=True)."""

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from uuid import uuid4

import pytest

from credits import clock, services
from credits.errors import HoldAlreadySettled, IdempotencyConflict, InsufficientCredits
from credits.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry, Lot, LotSource
from tests.concurrency import run_together
from tests.credits.conftest import assert_every_lot_explained, assert_ledger_consistent, funded_user

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20  # each holds a connection (tests/concurrency.py checks they are free)


def outcome(call: Callable[..., object], **kwargs: object) -> str:
    """Call it; "ok", or the name of the error it raised."""
    try:
        call(**kwargs)
    except BaseException as exc:
        return type(exc).__name__
    return "ok"


def test_200_concurrent_holds_on_50_credits_reserve_exactly_50() -> None:
    now = clock.now()
    user = funded_user((20, now + timedelta(days=1)), (20, None), (10, now + timedelta(days=2)))

    def attempts(i: int) -> list[str]:
        return [
            outcome(services.hold_create, user_id=user.pk, request_id=f"r{i}-{n}")
            for n in range(10)
        ]

    results = run_together(THREADS, attempts)

    tally = Counter(o for result in results for o in result)  # type: ignore[union-attr]
    assert tally == {"ok": 50, InsufficientCredits.__name__: 150}
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (50, 50)
    assert Hold.objects.filter(status=HoldStatus.LIVE).count() == 50
    assert all(lot.reserved == lot.remaining for lot in Lot.objects.all())
    assert_ledger_consistent(user.pk)


def test_commits_racing_releases_settle_each_hold_exactly_one_way() -> None:
    user = funded_user((30, None), (20, clock.now() + timedelta(days=1)))
    for n in range(50):
        services.hold_create(user_id=user.pk, request_id=f"r{n}")

    # Threads 2j (commits) and 2j+1 (releases) race on holds j, j+10, ..., j+40, in the same order.
    def settle(i: int) -> list[tuple[str, str]]:
        done = []
        for n in range(i // 2, 50, THREADS // 2):
            request_id = f"r{n}"
            if i % 2 == 0:
                done.append((request_id, outcome(services.hold_commit, request_id=request_id)))
            else:
                done.append((request_id, outcome(services.hold_release, request_id=request_id)))
        return done

    results = run_together(THREADS, settle)

    by_hold: dict[str, list[str]] = {}
    for result in results:
        assert isinstance(result, list), result
        for request_id, what in result:
            by_hold.setdefault(request_id, []).append(what)
    assert len(by_hold) == 50
    for request_id, outcomes in by_hold.items():
        assert sorted(outcomes) == sorted(["ok", HoldAlreadySettled.__name__]), request_id
    holds = Hold.objects.all()
    committed = holds.filter(status=HoldStatus.COMMITTED)
    released = holds.filter(status=HoldStatus.RELEASED)
    assert committed.count() + released.count() == 50
    assert all(h.charged == 1 for h in committed) and all(h.charged == 0 for h in released)
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE)
    assert sorted(e.idempotency_key for e in charges) == sorted(f"charge:{h.pk}" for h in committed)
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (50 - committed.count(), 0)
    assert account.consumed == committed.count()
    assert_ledger_consistent(user.pk)


def test_a_commit_racing_the_sweep_after_the_hold_expired_settles_each_credit_once() -> None:
    # The clock is past the holds' expiry (and their lot's): whichever of the sweep and the
    # commit takes the account lock first, the expiry wins, because the hold was no longer live
    # when the commit arrived: the held credit expires once and the late success is charged 0.
    user = funded_user((16, clock.now() + timedelta(minutes=5)))
    for n in range(16):
        services.hold_create(user_id=user.pk, request_id=f"r{n}")
    clock.advance(timedelta(minutes=12))

    def work(i: int) -> object:  # 16 commits, 4 sweeps
        if i < 16:
            return services.hold_commit(request_id=f"r{i}").charged
        return services.accounts_sweep()

    results = run_together(THREADS, work)

    assert results[:16] == [0] * 16, results
    assert all(isinstance(r, int) for r in results[16:]), results
    holds = Hold.objects.all()
    assert {h.status for h in holds} == {HoldStatus.COMMITTED}
    assert not LedgerEntry.objects.filter(kind=EntryKind.CHARGE).exists()
    expiries = LedgerEntry.objects.filter(kind=EntryKind.EXPIRE)
    assert sorted(e.idempotency_key for e in expiries) == sorted(
        f"expire:hold:{h.pk}" for h in holds
    )
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (0, 0)
    assert_ledger_consistent(user.pk)


def test_a_commit_racing_the_real_instant_of_expiry_is_either_charged_or_expired_never_both() -> (
    None
):
    # Here real time crosses the expiry of the holds and of their lot while the commits and the
    # sweeps run: each hold is settled by exactly one of them. Either the commit came first (a
    # charge from the held lot) or the expiry did (the held credit expires, the late success is
    # charged 0, since the account has no other credit).
    expiry = clock.now() + timedelta(seconds=3)
    user = funded_user((16, expiry))
    for n in range(16):
        services.hold_create(user_id=user.pk, request_id=f"r{n}", ttl=expiry - clock.now())
    # Release the threads so that the expiry falls in the middle of the commits.
    time.sleep(max(0.0, (expiry - clock.now()).total_seconds() - 0.15))

    def work(i: int) -> object:  # 16 commits spread over 0.3 s, 4 threads sweeping
        if i < 16:
            time.sleep(i * 0.02)
            return services.hold_commit(request_id=f"r{i}").charged
        return [services.accounts_sweep() for _ in range(5)]

    results = run_together(THREADS, work)

    charged = results[:16]
    assert all(c in (0, 1) for c in charged), charged
    holds = {h.request_id: h for h in Hold.objects.all()}
    for n in range(16):
        hold = holds[f"r{n}"]
        keys = set(
            LedgerEntry.objects.filter(
                idempotency_key__in=[f"charge:{hold.pk}", f"expire:hold:{hold.pk}"]
            ).values_list("idempotency_key", flat=True)
        )
        assert keys == ({f"charge:{hold.pk}"} if charged[n] else {f"expire:hold:{hold.pk}"})
        assert (hold.status, hold.charged) == (HoldStatus.COMMITTED, charged[n])
    clock.advance(timedelta(seconds=5))
    services.accounts_sweep()
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (0, 0)
    assert account.consumed == sum(c for c in charged if isinstance(c, int))
    assert_ledger_consistent(user.pk)
    print(f"commits before the expiry: {account.consumed} of 16")


def test_the_same_grant_key_from_20_threads_writes_one_entry() -> None:
    user = funded_user()
    key = f"purchase:{uuid4()}"

    def grant(i: int) -> int:
        return services.credits_grant(
            user_id=user.pk, amount=500, source=LotSource.PURCHASE, idempotency_key=key
        ).pk

    results = run_together(20, grant)

    assert len(set(results)) == 1 and isinstance(results[0], int), results
    assert LedgerEntry.objects.filter(idempotency_key=key).count() == 1
    assert Lot.objects.filter(account_id=user.pk).count() == 1
    assert CreditAccount.objects.get(pk=user.pk).balance == 500

    with pytest.raises(IdempotencyConflict):
        services.credits_grant(
            user_id=user.pk, amount=501, source=LotSource.PURCHASE, idempotency_key=key
        )
    assert (LedgerEntry.objects.count(), CreditAccount.objects.get(pk=user.pk).balance) == (1, 500)
    assert_ledger_consistent(user.pk)


def test_the_same_grant_key_with_two_amounts_at_once_writes_only_the_first() -> None:
    user = funded_user()

    def grant(i: int) -> str:
        return outcome(
            lambda: services.credits_grant(
                user_id=user.pk,
                amount=50 + i % 2,
                source=LotSource.REFERRAL,
                idempotency_key="reward:1",
            )
        )

    results = run_together(20, grant)

    entry = LedgerEntry.objects.get()
    winner = entry.amount - 50
    assert [r for i, r in enumerate(results) if i % 2 == winner] == ["ok"] * 10
    assert [r for i, r in enumerate(results) if i % 2 != winner] == [
        IdempotencyConflict.__name__
    ] * 10
    assert CreditAccount.objects.get(pk=user.pk).balance == entry.amount
    assert_ledger_consistent(user.pk)


def test_the_sweep_racing_100_charges_on_lots_straddling_their_expiry_explains_every_credit() -> (
    None
):
    start = clock.now()
    first_expiry = start + timedelta(seconds=2)
    # Ten lots expiring one after another while the charges run, then enough credit that never
    # expires for every charge to succeed whatever the timing.
    user = funded_user(
        *[(12, first_expiry + timedelta(milliseconds=50 * n)) for n in range(10)], (100, None)
    )
    idle = [funded_user((3, first_expiry + timedelta(milliseconds=50 * n))) for n in range(5)]
    time.sleep(max(0.0, (first_expiry - clock.now()).total_seconds() - 0.2))
    charging = 16  # and 4 threads sweeping

    def work(i: int) -> object:
        if i >= charging:
            return [services.accounts_sweep() for _ in range(20)]
        outcomes = []
        for n in range(i, 100, charging):
            request_id = f"c{n}"
            outcomes.append(outcome(services.hold_create, user_id=user.pk, request_id=request_id))
            if outcomes[-1] == "ok":
                charged = services.hold_commit(request_id=request_id).charged
                outcomes[-1] = "charged" if charged else "not charged"
        return outcomes

    results = run_together(THREADS, work)

    charges = [r for r in results[:charging] if isinstance(r, list)]
    assert len(charges) == charging, results
    tally = Counter(o for r in charges for o in r)
    assert tally == {"charged": 100}, tally  # the never-expiring lot covers any shortfall
    # Then two sweeps at once, after every lot has expired.
    clock.advance(timedelta(seconds=10))
    swept = run_together(2, lambda i: services.accounts_sweep())
    # Both may find the same accounts due (the list is read unlocked); the account lock and the
    # lot's expiry mark make the second one a no-op, which the per-lot checks below prove.
    assert all(isinstance(n, int) for n in swept), swept
    assert run_together(2, lambda i: services.accounts_sweep()) == [0, 0]

    for who in [user, *idle]:
        assert_every_lot_explained(who.pk)
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 100
    expired_lots = Lot.objects.exclude(expires_at=None)
    assert all(lot.remaining == 0 and lot.expired_at is not None for lot in expired_lots)
    for lot in expired_lots:
        assert LedgerEntry.objects.filter(lot=lot, kind=EntryKind.EXPIRE).count() <= 1
    account = CreditAccount.objects.get(pk=user.pk)
    assert account.balance == 220 - 100 - sum(
        -e.amount for e in LedgerEntry.objects.filter(account=account, kind=EntryKind.EXPIRE)
    )
    assert_ledger_consistent()
    from_expiring = LedgerEntry.objects.filter(
        kind=EntryKind.CHARGE, lot__expires_at__isnull=False
    ).count()
    expired_by_operations = sum(
        -e.amount for e in LedgerEntry.objects.filter(account=account, kind=EntryKind.EXPIRE)
    )
    print(f"charged from expiring lots: {from_expiring}; expired: {expired_by_operations}")
