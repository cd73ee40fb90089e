"""What payments does when the ledger reports on a purchase's lot."""

from typing import Any
from uuid import UUID

from django.db.models import F
from django.dispatch import receiver

from credits.models import Lot
from credits.signals import auto_topup_requested, clawback_collected

from .models import Purchase


@receiver(clawback_collected, dispatch_uid="payments.clawback_collected")
def purchase_clawback_collected(sender: object, lot: Lot, amount: int, **kwargs: Any) -> None:
    """A refund's or dispute's owed credit was taken when its hold ended: the purchase's
    `credits_clawed_back` counts it, in the same transaction."""
    Purchase.objects.filter(lot_id=lot.pk).update(
        credits_clawed_back=F("credits_clawed_back") + amount
    )


@receiver(auto_topup_requested, dispatch_uid="payments.auto_topup_requested")
def auto_topup_requested_received(sender: object, user_id: UUID, **kwargs: Any) -> None:
    """The ledger stamped an account for an auto top-up: claim it after commit."""
    from .autotopup import auto_topup_requested_kick

    auto_topup_requested_kick(user_id=user_id)
