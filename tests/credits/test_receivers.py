import pytest
from django.db import transaction

from accounts.models import User
from accounts.signals import user_registered
from credits.models import CreditAccount, CreditSettings, EntryKind, LedgerEntry, LotSource
from tests.credits.conftest import assert_ledger_consistent
from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def test_registration_grants_the_signup_credits_once_in_its_own_transaction() -> None:
    user = registered_user()
    user_registered.send(sender=User, user=user, invite_code="")  # a repeated signal

    entry = LedgerEntry.objects.get(account_id=user.pk)
    assert (entry.kind, entry.amount, entry.lot.source, entry.lot.expires_at) == (
        EntryKind.GRANT,
        100,
        LotSource.SIGNUP,
        None,
    )
    assert CreditAccount.objects.get(pk=user.pk).balance == 100
    assert_ledger_consistent(user.pk)


def test_staff_can_change_the_signup_grant() -> None:
    CreditSettings.objects.update_or_create(pk=1, defaults={"signup_credits": 250})
    assert CreditAccount.objects.get(pk=registered_user().pk).balance == 250


def test_a_registration_that_rolls_back_leaves_no_credits_behind() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        registered_user(email="gone@example.com")
        raise RuntimeError("the registration failed after the grant")
    assert not User.objects.filter(email="gone@example.com").exists()
    assert not LedgerEntry.objects.exists()
