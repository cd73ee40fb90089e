"""Races on the signup rewards, on real PostgreSQL: each thread on its own connection, released
together (tests.concurrency). 20 threads each: the shared server allows 100 connections."""

from typing import Any

import pytest
from django.test import override_settings

from accounts.models import MailboxClaim, User
from accounts.services import email_verify, user_register
from accounts.tokens import token_make
from config.errors import ApplicationError
from credits.models import CreditAccount, LedgerEntry, LotSource
from referrals.models import Referral, RegistrationReward
from tests.concurrency import run_together
from tests.mail_support import Mailbox, token_in
from tests.referrals.conftest import program, register

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20
PASSWORD = "a-long and unusual passphrase 42"
# 20 spellings of one Gmail mailbox.
SPELLINGS = ["ab@gmail.com", "A.B@googlemail.com", "a.b@GMail.com"] + [
    f"{'A' if n % 2 else 'a'}{'.' if n % 3 else ''}b+t{n}@{'googlemail' if n % 2 else 'gmail'}.com"
    for n in range(THREADS - 3)
]


def _signup_grants() -> int:
    return LedgerEntry.objects.filter(lot__source=LotSource.SIGNUP).count()


def _verify_token(user: User) -> str:
    return token_make(purpose="verify_email", user=user, email=user.email)


def test_twenty_concurrent_verifications_of_one_token_grant_once(smtp: Mailbox) -> None:
    user = user_register(email="ann@example.com", password=PASSWORD)
    token = token_in(smtp.wait_for("ann@example.com")[0])
    results = run_together(THREADS, lambda i: email_verify(token=token))
    assert all(isinstance(r, User) for r in results), results
    assert CreditAccount.objects.get(pk=user.pk).balance == 100
    assert _signup_grants() == 1


def test_the_spellings_are_one_mailbox() -> None:
    from accounts.models import mailbox_of

    assert len(set(SPELLINGS)) == THREADS
    assert {mailbox_of(s) for s in SPELLINGS} == {"ab@gmail.com"}


def test_twenty_accounts_of_one_mailbox_verifying_at_once_get_one_signup_grant() -> None:
    users = [user_register(email=email, password=PASSWORD) for email in SPELLINGS]
    assert len({u.email for u in users}) == THREADS  # each spelling is its own account
    results = run_together(THREADS, lambda i: email_verify(token=_verify_token(users[i])))
    assert all(isinstance(r, User) for r in results), results
    assert _signup_grants() == 1
    assert sorted(CreditAccount.objects.values_list("balance", flat=True)) == [0] * 19 + [100]
    assert MailboxClaim.objects.count() == 1


@override_settings(EMAIL_VERIFICATION="off")
def test_twenty_registrations_of_one_mailbox_at_once_get_at_most_one_signup_grant() -> None:
    results: list[Any] = run_together(
        THREADS, lambda i: user_register(email=SPELLINGS[i], password=PASSWORD)
    )
    assert not [r for r in results if not isinstance(r, (User, ApplicationError))], results
    assert _signup_grants() == 1
    assert MailboxClaim.objects.count() == 1


def test_invitees_verifying_at_once_never_pass_the_inviters_daily_cap() -> None:
    program(max_registration_rewards_per_day=5)
    ann = register("ann@example.com")
    invitees = [
        user_register(
            email=f"invitee{n}@example.com", password=PASSWORD, invite_code=ann.invite_code
        )
        for n in range(THREADS)
    ]
    results = run_together(THREADS, lambda i: email_verify(token=_verify_token(invitees[i])))
    assert all(isinstance(r, User) for r in results), results
    statuses = list(Referral.objects.values_list("registration_status", flat=True))
    assert statuses.count(RegistrationReward.GRANTED) == 5
    assert statuses.count(RegistrationReward.DAILY_CAP) == THREADS - 5
    assert CreditAccount.objects.get(pk=ann.pk).balance == 100 + 5 * 50


def test_a_second_account_of_a_mailbox_earns_its_inviter_nothing() -> None:
    ann = register("ann@example.com")
    register("bob@example.com")  # bob's mailbox has had its rewards
    again = register("Bob+second@example.com", invite_code=ann.invite_code)
    assert (
        Referral.objects.get(invitee=again).registration_status == RegistrationReward.MAILBOX_USED
    )
    assert CreditAccount.objects.get(pk=ann.pk).balance == 100
    assert CreditAccount.objects.get(pk=again.pk).balance == 0
