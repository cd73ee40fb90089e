"""The referral programme through its real entry points: registration (the accounts service,
which sends `user_registered` inside its transaction) and the purchase signals."""

from datetime import datetime, time, timedelta

import pytest
from django.db import transaction

from accounts.models import User
from accounts.signals import user_registered
from config.errors import ApplicationError
from credits import clock
from credits import services as credits_services
from credits.models import CreditAccount, LedgerEntry, Lot, LotSource
from credits.reconciliation import reconcile
from referrals.models import PaymentReward, Referral, RegistrationReward
from referrals.services import mailbox_of
from tests.factories import registered_user
from tests.referrals.conftest import (
    CLAWBACK,
    GRANT,
    balance,
    pay,
    program,
    purchase_of,
    referral_entries,
    referral_of,
    register,
    reverse,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann() -> User:
    """The inviter: registered, holding the 100 signup credits."""
    return registered_user(email="ann@example.com")


def move_clock_to_noon_utc() -> None:
    """Day-boundary tests start at noon, so that nothing they do straddles midnight."""
    now = clock.now()
    noon = datetime.combine(now.date(), time(12), tzinfo=now.tzinfo)
    clock.advance(noon - now)


# --- registration -------------------------------------------------------------------------


def test_registering_without_a_code_links_nobody_and_rewards_nobody(ann: User) -> None:
    bob = register("bob@example.com")
    assert not Referral.objects.exists()
    assert balance(bob) == 100
    assert balance(ann) == 100


@pytest.mark.parametrize("code", ["", "   "])
def test_an_empty_code_means_none(ann: User, code: str) -> None:
    bob = register("bob@example.com", invite_code=code)
    assert not Referral.objects.filter(invitee=bob).exists()
    assert balance(ann) == 100


def test_registering_with_a_code_links_the_invitee_and_grants_the_inviter_50(ann: User) -> None:
    bob = register("bob@example.com", invite_code=ann.invite_code)

    referral = referral_of(bob)
    assert referral.inviter == ann
    assert referral.registration_status == RegistrationReward.GRANTED
    assert referral.payment_status == PaymentReward.PENDING
    assert balance(ann) == 150
    assert balance(bob) == 100  # the invitee gets the signup grant only
    entry = referral.registration_entry
    assert entry is not None
    assert (entry.account_id, entry.kind, entry.amount) == (ann.pk, GRANT, 50)
    assert entry.reference == f"referral:{referral.pk}"
    assert entry.idempotency_key == f"referral:registered:{referral.pk}"
    assert (entry.lot.source, entry.lot.expires_at) == (LotSource.REFERRAL, None)
    assert reconcile() == []


@pytest.mark.parametrize("typed", ["lower", " padded "])
def test_invite_codes_match_whatever_their_case(ann: User, typed: str) -> None:
    code = ann.invite_code.lower() if typed == "lower" else f"  {ann.invite_code}  "
    bob = register("bob@example.com", invite_code=code)
    assert referral_of(bob).inviter == ann
    assert balance(ann) == 150


@pytest.mark.parametrize("code", ["NOPE2345", "x" * 200, "ann@example.com"])
def test_an_unknown_code_is_refused_and_creates_no_user(ann: User, code: str) -> None:
    users, entries = User.objects.count(), LedgerEntry.objects.count()

    with pytest.raises(ApplicationError) as refused:
        register("bob@example.com", invite_code=code)

    assert (refused.value.code, refused.value.field) == ("invalid_invite_code", "invite_code")
    assert refused.value.status_code == 400
    assert not User.objects.filter(email="bob@example.com").exists()
    assert (User.objects.count(), LedgerEntry.objects.count()) == (users, entries)
    assert not Referral.objects.exists()
    assert balance(ann) == 100


def test_a_deactivated_users_code_no_longer_works(ann: User) -> None:
    User.objects.filter(pk=ann.pk).update(is_active=False)
    with pytest.raises(ApplicationError) as refused:
        register("bob@example.com", invite_code=ann.invite_code)
    assert refused.value.code == "invalid_invite_code"
    assert not User.objects.filter(email="bob@example.com").exists()


@pytest.mark.parametrize(
    ("inviter_email", "invitee_email"),
    [
        ("ann@example.com", "ann+second@example.com"),
        ("ann@example.com", "ANN+Promo@Example.COM"),
        ("ann+one@example.com", "ann+two@example.com"),
        ("ann+one@example.com", "Ann@Example.com"),
    ],
)
def test_registering_with_ones_own_code_from_the_same_mailbox_is_a_self_referral(
    inviter_email: str, invitee_email: str
) -> None:
    inviter = registered_user(email=inviter_email)

    with pytest.raises(ApplicationError) as refused:
        register(invitee_email, invite_code=inviter.invite_code.lower())

    assert (refused.value.code, refused.value.field) == ("self_referral", "invite_code")
    assert User.objects.count() == 1
    assert not Referral.objects.exists()
    assert balance(inviter) == 100


@pytest.mark.parametrize("invitee_email", ["ann@example.org", "anna@example.com", "nn@example.com"])
def test_another_mailbox_is_not_a_self_referral(ann: User, invitee_email: str) -> None:
    invitee = register(invitee_email, invite_code=ann.invite_code)
    assert referral_of(invitee).inviter == ann


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("Ann+Tag@Example.com", "ann@example.com"),
        ("ann+a+b@example.com", "ann@example.com"),
        ("ann@example.com", "ann@example.com"),
        ("+tag@example.com", "@example.com"),
    ],
)
def test_the_mailbox_of_an_address_drops_case_and_plus_tag(address: str, mailbox: str) -> None:
    assert mailbox_of(address) == mailbox


def test_the_registration_reward_is_granted_once_per_invitee_even_if_announced_twice(
    ann: User,
) -> None:
    bob = register("bob@example.com", invite_code=ann.invite_code)
    with transaction.atomic():
        user_registered.send(sender=User, user=bob, invite_code=ann.invite_code)

    assert Referral.objects.filter(invitee=bob).count() == 1
    assert referral_entries(ann) == [(GRANT, 50, f"referral:{referral_of(bob).pk}")]
    assert balance(ann) == 150


def test_reward_amounts_are_the_programmes_current_ones(ann: User) -> None:
    program(registration_reward=75, payment_reward=800)
    bob = register("bob@example.com", invite_code=ann.invite_code)
    pay(purchase_of(bob))
    assert balance(ann) == 100 + 75 + 800


def test_an_inviter_without_a_credit_account_gets_one_with_the_reward() -> None:
    # Made outside registration (as `createsuperuser` does), with its empty account removed
    # (as before credits/receivers.py opened one for every user).
    staff = User.objects.create_user(email="staff@example.com", password="x")
    CreditAccount.objects.filter(pk=staff.pk).delete()
    bob = register("bob@example.com", invite_code=staff.invite_code)
    assert referral_of(bob).inviter == staff
    assert CreditAccount.objects.get(pk=staff.pk).balance == 50


# --- the daily cap ------------------------------------------------------------------------


def test_the_daily_cap_stops_registration_rewards_but_not_registrations(ann: User) -> None:
    move_clock_to_noon_utc()
    program(max_registration_rewards_per_day=2)

    invitees = [register(f"friend{n}@example.com", invite_code=ann.invite_code) for n in range(4)]

    statuses = [referral_of(u).registration_status for u in invitees]
    assert statuses == [RegistrationReward.GRANTED] * 2 + [RegistrationReward.DAILY_CAP] * 2
    assert all(referral_of(u).registration_entry is None for u in invitees[2:])
    assert balance(ann) == 100 + 2 * 50
    assert all(balance(u) == 100 for u in invitees)  # every invitee registered normally


def test_the_daily_cap_counts_per_utc_day(ann: User) -> None:
    move_clock_to_noon_utc()
    program(max_registration_rewards_per_day=1)
    register("friend1@example.com", invite_code=ann.invite_code)
    capped = register("friend2@example.com", invite_code=ann.invite_code)

    clock.advance(timedelta(hours=12))  # 00:00 UTC the next day
    next_day = register("friend3@example.com", invite_code=ann.invite_code)

    assert referral_of(capped).registration_status == RegistrationReward.DAILY_CAP
    assert referral_of(next_day).registration_status == RegistrationReward.GRANTED
    assert balance(ann) == 200


def test_the_daily_cap_is_per_inviter(ann: User) -> None:
    move_clock_to_noon_utc()
    program(max_registration_rewards_per_day=1)
    cy = registered_user(email="cy@example.com")
    register("friend1@example.com", invite_code=ann.invite_code)
    from_cy = register("friend2@example.com", invite_code=cy.invite_code)
    assert referral_of(from_cy).registration_status == RegistrationReward.GRANTED
    assert (balance(ann), balance(cy)) == (150, 150)


def test_invitees_over_the_cap_still_earn_the_payment_reward(ann: User) -> None:
    move_clock_to_noon_utc()
    program(max_registration_rewards_per_day=0)
    bob = register("bob@example.com", invite_code=ann.invite_code)
    pay(purchase_of(bob))
    assert referral_of(bob).registration_status == RegistrationReward.DAILY_CAP
    assert referral_of(bob).payment_status == PaymentReward.GRANTED
    assert balance(ann) == 600


# --- the switch ---------------------------------------------------------------------------


def test_switched_off_codes_still_link_invitees_but_earn_nothing(ann: User) -> None:
    program(enabled=False)
    bob = register("bob@example.com", invite_code=ann.invite_code)
    purchase = purchase_of(bob)
    pay(purchase)

    referral = referral_of(bob)
    assert referral.inviter == ann
    assert referral.registration_status == RegistrationReward.DISABLED
    assert referral.payment_status == PaymentReward.DISABLED
    assert referral.paid_purchase == str(purchase.pk)
    assert referral_entries(ann) == []
    assert balance(ann) == 100


def test_switched_off_an_unknown_code_is_still_refused(ann: User) -> None:
    program(enabled=False)
    with pytest.raises(ApplicationError) as refused:
        register("bob@example.com", invite_code="NOPE2345")
    assert refused.value.code == "invalid_invite_code"
    assert not User.objects.filter(email="bob@example.com").exists()


def test_a_first_payment_made_while_switched_off_is_not_rewarded_later(ann: User) -> None:
    bob = register("bob@example.com", invite_code=ann.invite_code)
    program(enabled=False)
    pay(purchase_of(bob))
    program(enabled=True)
    pay(purchase_of(bob))

    assert referral_of(bob).payment_status == PaymentReward.DISABLED
    assert balance(ann) == 150


def test_a_reward_of_zero_is_recorded_as_not_granted(ann: User) -> None:
    program(registration_reward=0)
    bob = register("bob@example.com", invite_code=ann.invite_code)
    assert referral_of(bob).registration_status == RegistrationReward.DISABLED
    assert balance(ann) == 100


# --- the first payment --------------------------------------------------------------------


@pytest.fixture
def bob(ann: User) -> User:
    """Invited by Ann (who earned 50 for it)."""
    return register("bob@example.com", invite_code=ann.invite_code)


def test_the_invitees_first_payment_grants_the_inviter_500(ann: User, bob: User) -> None:
    purchase = purchase_of(bob)
    pay(purchase)

    referral = referral_of(bob)
    assert referral.payment_status == PaymentReward.GRANTED
    assert referral.paid_purchase == str(purchase.pk)
    assert referral.paid_at is not None
    entry = referral.payment_entry
    assert entry is not None
    assert (entry.account_id, entry.kind, entry.amount) == (ann.pk, GRANT, 500)
    assert entry.reference == f"referral:{referral.pk}"
    assert entry.idempotency_key == f"referral:paid:{referral.pk}"
    assert (entry.lot.source, entry.lot.expires_at) == (LotSource.REFERRAL, None)
    assert balance(ann) == 650
    assert reconcile() == []


def test_a_second_payment_earns_nothing_more(ann: User, bob: User) -> None:
    first = purchase_of(bob)
    pay(first)
    pay(purchase_of(bob))
    assert referral_of(bob).paid_purchase == str(first.pk)
    assert balance(ann) == 650
    assert [amount for _, amount, _ in referral_entries(ann)] == [50, 500]


def test_the_same_payment_announced_twice_is_rewarded_once(ann: User, bob: User) -> None:
    purchase = purchase_of(bob)
    pay(purchase)
    pay(purchase)
    assert balance(ann) == 650


def test_a_payment_by_someone_nobody_invited_rewards_nobody(ann: User) -> None:
    loner = register("loner@example.com")
    pay(purchase_of(loner))
    assert referral_entries(ann) == []
    assert LedgerEntry.objects.filter(reference__startswith="referral:").count() == 0


def test_the_inviters_own_payment_earns_the_inviter_nothing(ann: User, bob: User) -> None:
    pay(purchase_of(ann))
    assert balance(ann) == 150
    assert referral_of(bob).payment_status == PaymentReward.PENDING


# --- reversals ----------------------------------------------------------------------------


def test_a_full_refund_of_the_first_payment_claws_the_reward_back(ann: User, bob: User) -> None:
    purchase = purchase_of(bob)
    pay(purchase)
    reverse(purchase, cause="refund")

    referral = referral_of(bob)
    assert referral.payment_status == PaymentReward.REVERSED
    assert (referral.reversal_cause, referral.reversed_at is not None) == ("refund", True)
    clawback = referral.clawback_entry
    assert clawback is not None
    assert (clawback.account_id, clawback.kind, clawback.amount) == (ann.pk, CLAWBACK, -500)
    assert clawback.reference == f"referral:{referral.pk}"
    assert clawback.idempotency_key == f"referral:reversed:{referral.pk}"
    assert referral.payment_entry is not None
    assert clawback.lot_id == referral.payment_entry.lot_id
    assert balance(ann) == 150  # the registration reward stays
    assert reconcile() == []


def test_a_dispute_of_the_first_payment_claws_the_reward_back(ann: User, bob: User) -> None:
    purchase = purchase_of(bob)
    pay(purchase)
    reverse(purchase, cause="dispute")
    assert referral_of(bob).reversal_cause == "dispute"
    assert balance(ann) == 150


def test_a_clawback_takes_only_the_unspent_and_unheld_part_of_the_reward(
    ann: User, bob: User
) -> None:
    purchase = purchase_of(bob)
    pay(purchase)
    # Ann spends 640 of her 650: signup (100) and registration reward (50) go first (oldest
    # never-expiring lots), then 490 of the payment reward, which keeps 10.
    credits_services.credits_adjust(
        user_id=ann.pk, amount=-640, reason="spent", idempotency_key="test:spend"
    )
    credits_services.hold_create(user_id=ann.pk, request_id="ann-request")  # 1 of the 10 held
    reward_lot = Lot.objects.get(pk=referral_of(bob).payment_entry.lot_id)  # type: ignore[union-attr]
    assert (reward_lot.remaining, reward_lot.reserved) == (10, 1)

    reverse(purchase)

    clawback = referral_of(bob).clawback_entry
    assert clawback is not None and clawback.amount == -9
    reward_lot.refresh_from_db()
    assert (reward_lot.remaining, reward_lot.reserved) == (1, 1)
    assert balance(ann) == 1
    assert credits_services.hold_commit(request_id="ann-request").charged == 1  # still payable
    assert balance(ann) == 0
    assert reconcile() == []


def test_a_reward_already_spent_in_full_is_reversed_with_nothing_taken(
    ann: User, bob: User
) -> None:
    purchase = purchase_of(bob)
    pay(purchase)
    credits_services.credits_adjust(
        user_id=ann.pk, amount=-650, reason="spent", idempotency_key="test:spend-all"
    )
    reverse(purchase)

    referral = referral_of(bob)
    assert referral.payment_status == PaymentReward.REVERSED
    assert referral.clawback_entry is None
    assert balance(ann) == 0
    assert reconcile() == []


def test_a_reversed_reward_is_never_earned_again(ann: User, bob: User) -> None:
    first = purchase_of(bob)
    pay(first)
    reverse(first)
    pay(purchase_of(bob))
    pay(first)  # a late duplicate of the first payment's event

    assert referral_of(bob).payment_status == PaymentReward.REVERSED
    assert balance(ann) == 150
    assert [amount for _, amount, _ in referral_entries(ann)] == [50, 500, -500]


def test_a_refund_followed_by_a_dispute_claws_back_once(ann: User, bob: User) -> None:
    purchase = purchase_of(bob)
    pay(purchase)
    reverse(purchase, cause="refund")
    reverse(purchase, cause="dispute")

    assert referral_of(bob).reversal_cause == "refund"
    assert [amount for _, amount, _ in referral_entries(ann)] == [50, 500, -500]
    assert balance(ann) == 150


def test_reversing_a_later_purchase_leaves_the_reward_alone(ann: User, bob: User) -> None:
    first, second = purchase_of(bob), purchase_of(bob)
    pay(first)
    pay(second)
    reverse(second)

    assert referral_of(bob).payment_status == PaymentReward.GRANTED
    assert balance(ann) == 650


def test_a_reversal_before_any_payment_changes_nothing(ann: User, bob: User) -> None:
    purchase = purchase_of(bob)
    reverse(purchase)
    assert referral_of(bob).payment_status == PaymentReward.PENDING
    assert balance(ann) == 150


def test_reversing_a_first_payment_made_while_switched_off_takes_nothing(
    ann: User, bob: User
) -> None:
    program(enabled=False)
    purchase = purchase_of(bob)
    pay(purchase)
    reverse(purchase)

    referral = referral_of(bob)
    assert referral.payment_status == PaymentReward.DISABLED
    assert referral.reversed_at is not None
    assert balance(ann) == 150
