"""How the referral programme hears about registrations and payments. Each receiver runs inside
the sender's transaction, so its writes commit or roll back with the registration or payment,
and each is idempotent (a webhook may be processed twice)."""

from typing import Any

from django.dispatch import receiver

from accounts.signals import signup_confirmed, user_registered
from credits.payments.signals import purchase_paid, purchase_reversed

from . import services


@receiver(user_registered, dispatch_uid="referrals.link_invitee")
def link_invitee(sender: object, user: Any, invite_code: str | None = "", **kwargs: Any) -> None:
    """An unknown code or a self-referral raises ApplicationError: the registration is undone."""
    services.referral_register(invitee=user, invite_code=invite_code)


@receiver(signup_confirmed, dispatch_uid="referrals.reward_registration")
def reward_registration(
    sender: object, user: Any, first_of_mailbox: bool = False, **kwargs: Any
) -> None:
    services.referral_reward_registration(invitee=user, first_of_mailbox=first_of_mailbox)


@receiver(purchase_paid, dispatch_uid="referrals.reward_first_payment")
def reward_first_payment(sender: object, purchase: Any, **kwargs: Any) -> None:
    services.referral_reward_payment(invitee_id=purchase.user_id, purchase_id=purchase.pk)


@receiver(purchase_reversed, dispatch_uid="referrals.reverse_first_payment")
def reverse_first_payment(sender: object, purchase: Any, cause: str = "", **kwargs: Any) -> None:
    services.referral_reverse_payment(
        invitee_id=purchase.user_id, purchase_id=purchase.pk, cause=cause
    )
