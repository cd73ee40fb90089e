from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.signals import user_registered

from . import services
from .models import CreditSettings, LotSource


@receiver(user_registered, dispatch_uid="credits.signup_grant")
def grant_signup_credits(sender: object, user: Any, **kwargs: Any) -> None:
    """Open the account and grant the signup credits in the registration's transaction."""
    services.account_open(user_id=user.pk)
    amount = CreditSettings.load().signup_credits
    if amount > 0:
        services.credits_grant(
            user_id=user.pk,
            amount=amount,
            source=LotSource.SIGNUP,
            idempotency_key=f"signup:{user.pk}",
            reference="signup",
        )


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="credits.account_open")
def open_account_of_new_user(sender: object, instance: Any, created: bool, **kwargs: Any) -> None:
    """Every user has a credit account from the moment the row exists, however it was made
    (registration, `createsuperuser`, the admin's add form, a shell): staff pages, grants and
    the gateway never meet a user without one. Only registration grants the signup credits."""
    if created and not kwargs.get("raw"):
        services.account_open(user_id=instance.pk)
