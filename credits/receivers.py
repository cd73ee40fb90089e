"""How the ledger hears about accounts (`accounts.signals`). Each receiver runs inside the
sender's transaction, so what it writes commits or rolls back with the account change."""

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.signals import (
    api_key_created,
    api_key_revoked,
    api_key_rotated,
    signup_confirmed,
    user_deleted,
    user_registered,
)

from . import notices, services
from .models import CreditAccount, CreditSettings, EventType, Hold, HoldStatus, LotSource

ACCOUNT_DELETED_REASON = "account deleted"


@receiver(user_registered, dispatch_uid="credits.open_account")
def open_account(sender: object, user: Any, **kwargs: Any) -> None:
    """Every registered user has a credit account from the start (balance 0 until the signup
    grant, which waits for the signup's confirmation)."""
    services.account_open(user_id=user.pk)


@receiver(signup_confirmed, dispatch_uid="credits.signup_grant")
def grant_signup_credits(
    sender: object, user: Any, first_of_mailbox: bool = False, **kwargs: Any
) -> None:
    """The signup grant, for the first account of a mailbox only (CONTRACT.md part 2). The key
    names the user: a repeated signal grants once."""
    services.account_open(user_id=user.pk)
    amount = CreditSettings.load().signup_credits
    if first_of_mailbox and amount > 0:
        services.credits_grant(
            user_id=user.pk,
            amount=amount,
            source=LotSource.SIGNUP,
            idempotency_key=f"signup:{user.pk}",
            reference="signup",
        )


@receiver(user_deleted, dispatch_uid="credits.forfeit_balance")
def forfeit_balance(sender: object, user: Any, **kwargs: Any) -> None:
    """A deleted account forfeits what it holds: live holds are released (its keys are revoked
    in the same transaction, so nothing will use them), then the whole balance goes in one
    staff-style adjustment with the reason "account deleted". Entries stay: the ledger is
    append-only and the accounting needs them."""
    account = CreditAccount.objects.filter(pk=user.pk).first()
    if account is None:
        return
    for request_id in Hold.objects.filter(account_id=user.pk, status=HoldStatus.LIVE).values_list(
        "request_id", flat=True
    ):
        services.hold_release(request_id=request_id)
    account.refresh_from_db()
    available = services.account_balance(account=account).available
    if available > 0:
        services.credits_adjust(
            user_id=user.pk,
            amount=-available,
            reason=ACCOUNT_DELETED_REASON,
            idempotency_key=f"account-deleted:{user.pk}",
        )


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="credits.account_open")
def open_account_of_new_user(sender: object, instance: Any, created: bool, **kwargs: Any) -> None:
    """Every user has a credit account from the moment the row exists, however it was made
    (registration, `createsuperuser`, the admin's add form, a shell): staff pages, grants and
    the gateway never meet a user without one. Only registration grants the signup credits."""
    if created and not kwargs.get("raw"):
        services.account_open(user_id=instance.pk)


# --- key changes: their notification events (issue 17), in the transaction of the change -------


@receiver(api_key_created, dispatch_uid="credits.key_created_event")
def key_created_event(sender: object, key: Any, **kwargs: Any) -> None:
    notices.key_notify(key=key, type=EventType.KEY_CREATED, cause=f"key.created:{key.pk}")


@receiver(api_key_revoked, dispatch_uid="credits.key_revoked_event")
def key_revoked_event(sender: object, key: Any, **kwargs: Any) -> None:
    notices.key_notify(key=key, type=EventType.KEY_REVOKED, cause=f"key.revoked:{key.pk}")


@receiver(api_key_rotated, dispatch_uid="credits.key_rotated_event")
def key_rotated_event(sender: object, key: Any, **kwargs: Any) -> None:
    """One per rotation: the cause names the rotation's instant."""
    cause = f"key.rotated:{key.pk}:{key.rotated_at.isoformat()}"
    notices.key_notify(key=key, type=EventType.KEY_ROTATED, cause=cause)
