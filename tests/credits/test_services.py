"""The ledger's operations, one behaviour at a time, on real PostgreSQL."""

from datetime import datetime, timedelta
from uuid import UUID, uuid4

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from credits import clock, services
from credits.errors import IdempotencyConflict, InsufficientCredits
from credits.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry, Lot, LotSource
from tests.credits.conftest import assert_ledger_consistent, funded_user, lot_flows
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def _balance(user_id: UUID) -> services.Balance:
    return services.account_balance(account=CreditAccount.objects.get(pk=user_id))


def _lot(user_id: UUID, credits: int) -> Lot:
    return Lot.objects.get(account_id=user_id, granted=credits)


# --- expiry ------------------------------------------------------------------------------------


def test_a_lot_is_expired_at_the_exact_instant_of_its_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expires_at = clock.now() + DAY
    user = funded_user((5, expires_at), (2, None))
    account = CreditAccount.objects.get(pk=user.pk)
    just_before = expires_at - timedelta(microseconds=1)
    assert services.account_balance(account=account, now=just_before).balance == 7
    assert services.account_balance(account=account, now=expires_at).balance == 2
    assert [lot.granted for lot in services.lots_spendable(account=account, now=expires_at)] == [2]

    monkeypatch.setattr(clock, "now", lambda: expires_at)
    hold = services.hold_create(user_id=user.pk, request_id="at-the-boundary").hold
    assert hold.lot.granted == 2  # the expiring lot is not spent at its expiry instant
    expiry = LedgerEntry.objects.get(kind=EntryKind.EXPIRE, account_id=user.pk)
    assert (expiry.amount, expiry.lot.granted) == (-5, 5)
    assert_ledger_consistent(user.pk)


@pytest.mark.parametrize("swept_in_between", [False, True])
def test_a_hold_stays_chargeable_when_its_lot_expires_before_the_commit(
    swept_in_between: bool,
) -> None:
    user = funded_user((3, clock.now() + timedelta(minutes=5)))
    services.hold_create(user_id=user.pk, request_id="r")
    clock.advance(timedelta(minutes=6))  # the lot has expired, the hold (11 minutes) has not
    assert _balance(user.pk) == services.Balance(balance=1, reserved=1)
    if swept_in_between:
        assert services.accounts_sweep() == 1

    result = services.hold_commit(request_id="r")

    assert (result.charged, result.available) == (1, 0)
    flows = lot_flows(_lot(user.pk, 3))
    assert (flows[EntryKind.CHARGE], flows[EntryKind.EXPIRE]) == (1, 2)
    assert LedgerEntry.objects.filter(kind=EntryKind.EXPIRE).count() == 1  # expired once
    assert _balance(user.pk) == services.Balance(balance=0, reserved=0)
    assert_ledger_consistent(user.pk)


def test_releasing_a_hold_after_its_lot_expired_expires_the_rest_of_that_lot_too() -> None:
    # Regression: the release marked the lot as expired after writing the entry for the held
    # credit only, so the lot's unheld credits were never expired and stayed in the balance.
    user = funded_user((10, clock.now() + timedelta(minutes=5)))
    services.hold_create(user_id=user.pk, request_id="r")
    clock.advance(timedelta(minutes=6))

    result = services.hold_release(request_id="r")

    assert (result.charged, result.available) == (0, 0)
    assert lot_flows(_lot(user.pk, 10))[EntryKind.EXPIRE] == 10
    assert CreditAccount.objects.get(pk=user.pk).balance == 0
    assert _balance(user.pk) == services.Balance(balance=0, reserved=0)
    assert_ledger_consistent(user.pk)


@pytest.mark.parametrize("hold_ttl", [timedelta(seconds=10), timedelta(minutes=11)])
def test_a_hold_and_its_lot_coming_due_in_one_sweep_expire_every_credit_exactly_once(
    hold_ttl: timedelta,
) -> None:
    # Regression: the same defect, reached by the sweep (or the next operation) settling an
    # expired hold and its expired lot together on an account that was idle meanwhile.
    user = funded_user((10, clock.now() + timedelta(minutes=5)), (4, None))
    services.hold_create(user_id=user.pk, request_id="r", ttl=hold_ttl)
    clock.advance(timedelta(minutes=12))

    assert services.accounts_sweep() == 1

    assert lot_flows(_lot(user.pk, 10))[EntryKind.EXPIRE] == 10
    assert Hold.objects.get(request_id="r").status == HoldStatus.EXPIRED
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved) == (4, 0)
    assert services.accounts_sweep() == 0
    assert_ledger_consistent(user.pk)


def test_credit_released_back_to_an_expiring_lot_still_expires_on_time() -> None:
    # Regression: a release returned credit to an expiring lot without moving the account's
    # next event back to that lot's expiry, so once a recomputation had skipped the fully held
    # lot, its credit stayed in the cached balance after expiring, and a staff removal trusting
    # that balance wrote a partial adjustment.
    user = funded_user((1, clock.now() + timedelta(minutes=5)), (5, None))
    services.hold_create(user_id=user.pk, request_id="r")  # takes the expiring lot's only credit
    services.credits_claw_back(
        user_id=user.pk, lot_id=_lot(user.pk, 5).pk, claim_up_to=1, idempotency_key="claw"
    )  # recomputes the next event while the expiring lot is fully held
    services.hold_release(request_id="r")
    clock.advance(timedelta(minutes=6))

    assert _balance(user.pk) == services.Balance(balance=4, reserved=0)
    entries_before = LedgerEntry.objects.count()
    with pytest.raises(InsufficientCredits):
        services.credits_adjust(
            user_id=user.pk, amount=-5, reason="too much", idempotency_key="adj"
        )
    assert LedgerEntry.objects.count() == entries_before  # the refusal rolled back everything
    services.credits_adjust(user_id=user.pk, amount=-4, reason="all of it", idempotency_key="a2")
    assert CreditAccount.objects.get(pk=user.pk).balance == 0
    assert lot_flows(_lot(user.pk, 1))[EntryKind.EXPIRE] == 1
    assert_ledger_consistent(user.pk)


def test_a_hold_left_unsettled_is_released_lazily_by_the_next_operation() -> None:
    user = funded_user((5, None))
    services.hold_create(user_id=user.pk, request_id="old", ttl=timedelta(seconds=30))
    clock.advance(timedelta(seconds=30))  # exactly at the hold's expiry

    assert _balance(user.pk) == services.Balance(balance=5, reserved=0)
    assert Hold.objects.get(request_id="old").status == HoldStatus.LIVE  # the read wrote nothing
    services.hold_create(user_id=user.pk, request_id="next")

    assert Hold.objects.get(request_id="old").status == HoldStatus.EXPIRED
    assert CreditAccount.objects.get(pk=user.pk).reserved == 1
    assert not LedgerEntry.objects.filter(kind=EntryKind.EXPIRE).exists()
    assert_ledger_consistent(user.pk)


def test_a_hold_left_unsettled_is_released_by_the_sweep() -> None:
    user = funded_user((5, None))
    services.hold_create(user_id=user.pk, request_id="old")
    clock.advance(timedelta(minutes=12))

    assert services.accounts_sweep() == 1

    hold = Hold.objects.get(request_id="old")
    assert (hold.status, hold.charged) == (HoldStatus.EXPIRED, 0)
    account = CreditAccount.objects.get(pk=user.pk)
    assert (account.balance, account.reserved, account.next_event_at) == (5, 0, None)
    assert_ledger_consistent(user.pk)


def test_a_late_success_is_charged_from_available_credit() -> None:
    user = funded_user((5, None))
    services.hold_create(user_id=user.pk, request_id="late")
    clock.advance(timedelta(minutes=12))

    result = services.hold_commit(request_id="late")

    assert (result.charged, result.available, result.replayed) == (1, 4, False)
    assert result.hold.status == HoldStatus.COMMITTED
    assert services.hold_commit(request_id="late").replayed is True
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 1
    assert_ledger_consistent(user.pk)


def test_a_late_success_without_available_credit_is_charged_nothing() -> None:
    user = funded_user((1, None))
    services.hold_create(user_id=user.pk, request_id="late", ttl=timedelta(seconds=10))
    clock.advance(timedelta(seconds=11))
    services.hold_create(user_id=user.pk, request_id="newer")  # takes the released credit

    result = services.hold_commit(request_id="late")

    assert (result.charged, result.available) == (0, 0)
    assert result.hold.status == HoldStatus.COMMITTED
    assert not LedgerEntry.objects.filter(kind=EntryKind.CHARGE).exists()
    assert CreditAccount.objects.get(pk=user.pk).balance == 1
    assert_ledger_consistent(user.pk)


# --- burn-down order -----------------------------------------------------------------------------


def test_credits_burn_down_soonest_expiry_first_never_expiring_last_ties_oldest_first() -> None:
    now = clock.now()
    user = funded_user(
        (1, None),  # oldest, never expires
        (2, now + 30 * DAY),
        (3, now + 10 * DAY),
        (4, now + 10 * DAY),  # same expiry as the lot of 3, granted later
        (5, None),
    )
    assert [lot.granted for lot in services.lots_spendable(account=user.credit_account)] == [
        3,
        4,
        2,
        1,
        5,
    ]
    spent_from = []
    for n in range(15):
        hold = services.hold_create(user_id=user.pk, request_id=f"r{n}").hold
        services.hold_commit(request_id=f"r{n}")
        spent_from.append(hold.lot.granted)
    assert spent_from == [3] * 3 + [4] * 4 + [2] * 2 + [1] + [5] * 5
    assert_ledger_consistent(user.pk)


# --- reads -----------------------------------------------------------------------------------


def test_reading_the_balance_after_an_expiry_writes_nothing() -> None:
    user = funded_user((5, clock.now() + DAY), (3, None))
    services.hold_create(user_id=user.pk, request_id="r", ttl=timedelta(hours=1))
    clock.advance(2 * DAY)
    account = CreditAccount.objects.get(pk=user.pk)
    entries_before = LedgerEntry.objects.count()

    with CaptureQueriesContext(connection) as queries:
        balance = services.account_balance(account=account)
        lots = services.lots_spendable(account=account)

    assert balance == services.Balance(balance=3, reserved=0)
    assert [lot.granted for lot in lots] == [3]
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert set(statements) == {"SELECT"}, statements
    assert LedgerEntry.objects.count() == entries_before
    assert Hold.objects.get(request_id="r").status == HoldStatus.LIVE
    assert CreditAccount.objects.get(pk=user.pk).balance == 8  # the cache is written later


# --- staff adjustments and claw-backs ------------------------------------------------------------


def test_a_negative_adjustment_larger_than_the_available_balance_is_refused_writing_nothing() -> (
    None
):
    user = funded_user((6, None), (4, clock.now() + DAY))
    services.hold_create(user_id=user.pk, request_id="r", amount=3)  # available: 7
    entries_before = LedgerEntry.objects.count()

    with pytest.raises(InsufficientCredits) as refused:
        services.credits_adjust(user_id=user.pk, amount=-8, reason="x", idempotency_key="a1")

    assert "only 7 are available" in refused.value.message
    assert LedgerEntry.objects.count() == entries_before
    assert sorted(Lot.objects.values_list("remaining", flat=True)) == [4, 6]


def test_a_negative_adjustment_takes_available_credit_in_burn_down_order() -> None:
    staff = UserFactory.create(is_staff=True)
    user = funded_user((6, None), (4, clock.now() + DAY))
    services.hold_create(user_id=user.pk, request_id="r", amount=3)  # on the expiring lot

    entries = services.credits_adjust(
        user_id=user.pk,
        amount=-7,
        reason="goodwill reversed",
        idempotency_key="a1",
        created_by=staff,
    )

    assert [(e.lot.granted, e.amount) for e in entries] == [(4, -1), (6, -6)]
    assert all(e.kind == EntryKind.ADJUST and e.created_by == staff for e in entries)
    assert entries[-1].reason == "goodwill reversed"
    again = services.credits_adjust(
        user_id=user.pk, amount=-7, reason="goodwill reversed", idempotency_key="a1"
    )
    assert [e.pk for e in again] == [e.pk for e in entries]
    with pytest.raises(IdempotencyConflict):
        services.credits_adjust(user_id=user.pk, amount=-6, reason="x", idempotency_key="a1")
    assert _balance(user.pk) == services.Balance(balance=3, reserved=3)
    assert_ledger_consistent(user.pk)


def test_a_claw_back_takes_the_unheld_credits_now_and_owes_the_held_ones() -> None:
    user = funded_user((5, None), (9, None))
    lot = _lot(user.pk, 5)
    services.hold_create(user_id=user.pk, request_id="r", amount=2)  # on the older lot of 5

    result = services.credits_claw_back(
        user_id=user.pk, lot_id=lot.pk, claim_up_to=50, idempotency_key="refund-1"
    )

    entry = result.entry
    assert entry is not None and (entry.kind, entry.amount) == (EntryKind.CLAWBACK, -3)
    assert (result.owed, result.uncollectable) == (2, 0)  # the claim is capped at the lot's 5
    again = services.credits_claw_back(
        user_id=user.pk, lot_id=lot.pk, claim_up_to=1, idempotency_key="refund-2"
    )
    assert (again.entry, again.owed, again.uncollectable) == (None, 0, 0)
    assert _balance(user.pk) == services.Balance(balance=11, reserved=2)
    assert_ledger_consistent(user.pk)

    services.hold_release(request_id="r")  # the owed credits come back, and are taken

    assert _balance(user.pk) == services.Balance(balance=9, reserved=0)
    lot.refresh_from_db()
    assert (lot.remaining, lot.clawback_owed, lot.clawback_uncollectable) == (0, 0, 0)
    assert lot_flows(lot)[EntryKind.CLAWBACK] == 5
    assert_ledger_consistent(user.pk)


# --- idempotency -------------------------------------------------------------------------------


def test_a_repeated_grant_returns_the_first_entry_and_a_different_amount_is_a_conflict() -> None:
    user = funded_user()
    first = services.credits_grant(
        user_id=user.pk, amount=50, source=LotSource.REFERRAL, idempotency_key="ref:1"
    )
    again = services.credits_grant(
        user_id=user.pk, amount=50, source=LotSource.REFERRAL, idempotency_key="ref:1"
    )
    assert again.pk == first.pk

    with pytest.raises(IdempotencyConflict) as conflict:
        services.credits_grant(
            user_id=user.pk, amount=60, source=LotSource.REFERRAL, idempotency_key="ref:1"
        )

    assert conflict.value.code == "idempotency_conflict"
    assert "ref:1" in conflict.value.message
    assert (LedgerEntry.objects.count(), Lot.objects.count()) == (1, 1)
    assert CreditAccount.objects.get(pk=user.pk).balance == 50


def test_a_grant_key_used_on_another_account_is_a_conflict_writing_nothing() -> None:
    first, second = funded_user(), funded_user()
    services.credits_grant(
        user_id=first.pk, amount=5, source=LotSource.PURCHASE, idempotency_key="k"
    )
    with pytest.raises(IdempotencyConflict):
        services.credits_grant(
            user_id=second.pk, amount=5, source=LotSource.PURCHASE, idempotency_key="k"
        )
    assert CreditAccount.objects.get(pk=second.pk).balance == 0
    assert not Lot.objects.filter(account_id=second.pk).exists()


def test_a_grant_that_arrives_already_expired_is_recorded_and_expires_at_once() -> None:
    user = funded_user()
    past: datetime = clock.now() - timedelta(seconds=1)
    services.credits_grant(
        user_id=user.pk,
        amount=7,
        source=LotSource.PURCHASE,
        idempotency_key=str(uuid4()),
        expires_at=past,
    )
    assert [e.kind for e in LedgerEntry.objects.order_by("id")] == ["grant", "expire"]
    assert CreditAccount.objects.get(pk=user.pk).balance == 0
    assert_ledger_consistent(user.pk)
