"""Helpers for the referral tests: the programme's knobs, registering through the real
registration service, and payment events sent the way the purchase flow sends them."""

from typing import Any

from django.db import transaction

from accounts.models import User
from accounts.services import email_verify, user_register
from accounts.tokens import token_make
from credits import clock
from credits.models import CreditAccount, EntryKind, LedgerEntry
from credits.payments.models import Package, Purchase, PurchaseStatus
from credits.payments.signals import purchase_paid, purchase_reversed
from referrals.models import Referral, ReferralProgram

PASSWORD = "a-long and unusual passphrase 42"


def program(**changes: Any) -> ReferralProgram:
    """Change the programme's knobs as staff would in the admin."""
    settings_row = ReferralProgram.load()
    for name, value in changes.items():
        setattr(settings_row, name, value)
    settings_row.save()
    return settings_row


def register(email: str, invite_code: str = "") -> User:
    """Register and verify through the real services (each one durable transaction, signals
    inside it), following the token the verification mail carries."""
    user = user_register(email=email, password=PASSWORD, invite_code=invite_code)
    return verify(user)


def verify(user: User) -> User:
    return email_verify(token=token_make(purpose="verify_email", user=user, email=user.email))


def balance(user: User) -> int:
    return CreditAccount.objects.get(pk=user.pk).balance


def referral_entries(user: User) -> list[tuple[str, int, str]]:
    """The user's ledger entries that came from the referral programme, oldest first."""
    return list(
        LedgerEntry.objects.filter(account_id=user.pk, reference__startswith="referral:")
        .order_by("id")
        .values_list("kind", "amount", "reference")
    )


def referral_of(invitee: User) -> Referral:
    return Referral.objects.get(invitee=invitee)


def purchase_of(user: User) -> Purchase:
    """A real purchase row of `user`, recorded as paid. The purchase signals hand receivers the
    row; this app uses only its `pk` and `user_id`. (The Stripe flow itself is exercised end
    to end in test_stripe_flow.py.)"""
    starter, _ = Package.objects.get_or_create(  # seeded by migration; flushed by races
        slug="starter",
        defaults={"name": "Starter", "credits": 500, "price_amount": 499, "currency": "usd"},
    )
    now = clock.now()
    return Purchase.objects.create(
        user=user,
        package=starter,
        credits=starter.credits,
        price_amount=starter.price_amount,
        currency=starter.currency,
        status=PurchaseStatus.PAID,
        amount_paid=starter.price_amount,
        currency_paid=starter.currency,
        paid_at=now,
        created_at=now,
    )


def pay(purchase: Any) -> None:
    """`purchase_paid` as the purchase flow sends it: inside the grant's transaction."""
    with transaction.atomic():
        purchase_paid.send(sender=Purchase, purchase=purchase)


def reverse(purchase: Any, cause: str = "refund") -> None:
    with transaction.atomic():
        purchase_reversed.send(sender=Purchase, purchase=purchase, cause=cause)


GRANT = EntryKind.GRANT
CLAWBACK = EntryKind.CLAWBACK
