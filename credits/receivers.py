from typing import Any

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
