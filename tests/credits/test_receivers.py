import importlib
import io

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
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


def test_every_user_gets_a_credit_account_but_only_registration_grants() -> None:
    user = User.objects.create_user(email="made-by-hand@example.com", password="x")
    root = User.objects.create_superuser(email="root@example.com", password="x")
    for made in (user, root):
        account = CreditAccount.objects.get(pk=made.pk)
        assert (account.balance, account.reserved, account.consumed) == (0, 0, 0)
        assert not LedgerEntry.objects.filter(account_id=made.pk).exists()


def test_createsuperuser_noinput_opens_the_credit_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "Admin@Example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long staff password")
    call_command("createsuperuser", "--noinput", stdout=io.StringIO())
    admin = User.objects.get(email="admin@example.com")
    assert admin.is_superuser and admin.is_staff
    assert CreditAccount.objects.get(pk=admin.pk).balance == 0


def test_the_migration_opens_the_accounts_of_users_made_before_the_receiver() -> None:
    migration = importlib.import_module("credits.migrations.0011_open_missing_accounts")
    users = [User.objects.create_user(email=f"old{n}@example.com") for n in range(3)]
    CreditAccount.objects.filter(pk__in=[u.pk for u in users[:2]]).delete()
    migration.open_missing_accounts(django_apps, None)
    assert CreditAccount.objects.filter(pk__in=[u.pk for u in users]).count() == 3
    migration.open_missing_accounts(django_apps, None)  # again: nothing to do, no error
    assert CreditAccount.objects.filter(pk__in=[u.pk for u in users]).count() == 3
