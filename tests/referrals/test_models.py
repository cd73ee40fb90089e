"""The referral invariants hold in the database itself: each test writes a bad row below the
ORM's checks (`.update()`, raw SQL) and expects PostgreSQL to refuse it."""

import pytest
from django.db import IntegrityError, transaction

from referrals.models import PaymentReward, Referral, ReferralProgram
from tests.factories import registered_user
from tests.referrals.conftest import pay, purchase_of, register

pytestmark = pytest.mark.django_db


@pytest.fixture
def referral() -> Referral:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    return Referral.objects.get(invitee=bob)


def refused(**changes: object) -> None:
    """Assert the database refuses updating the one referral with `changes`."""
    with pytest.raises(IntegrityError), transaction.atomic():
        Referral.objects.update(**changes)


def test_the_migration_seeds_the_documented_programme() -> None:
    row = ReferralProgram.objects.get(pk=1)
    assert (
        row.enabled,
        row.registration_reward,
        row.payment_reward,
        row.max_registration_rewards_per_day,
    ) == (True, 50, 500, 20)


def test_there_is_only_one_programme_row() -> None:
    ReferralProgram.load()
    with pytest.raises(IntegrityError), transaction.atomic():
        ReferralProgram.objects.create(pk=2)


def test_nobody_can_be_their_own_inviter(referral: Referral) -> None:
    refused(inviter_id=referral.invitee_id)


def test_an_invitee_has_one_inviter(referral: Referral) -> None:
    cy = registered_user(email="cy@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Referral.objects.create(
            inviter=cy,
            invitee=referral.invitee,
            created_at=referral.created_at,
            registration_status="disabled",
        )


def test_a_status_outside_its_choices_is_refused(referral: Referral) -> None:
    refused(registration_status="maybe")
    refused(payment_status="maybe")


def test_a_granted_registration_reward_names_its_ledger_entry(referral: Referral) -> None:
    refused(registration_entry=None)
    refused(registration_status="daily_cap")  # not granted, yet naming an entry


def test_a_payment_reward_names_the_purchase_and_its_entry(referral: Referral) -> None:
    refused(payment_status=PaymentReward.GRANTED)  # no purchase, no entry
    pay(purchase_of(referral.invitee))
    refused(paid_purchase="")
    refused(payment_entry=None)
    refused(payment_status=PaymentReward.REVERSED)  # reversed without a time
