"""What payments does when the ledger reports on a purchase's lot."""

from typing import Any

from django.db.models import F
from django.dispatch import receiver

from credits.models import Lot
from credits.signals import clawback_collected

from .models import Purchase


@receiver(clawback_collected, dispatch_uid="payments.clawback_collected")
def purchase_clawback_collected(sender: object, lot: Lot, amount: int, **kwargs: Any) -> None:
    """A refund's or dispute's owed credit was taken when its hold ended: the purchase's
    `credits_clawed_back` counts it, in the same transaction."""
    Purchase.objects.filter(lot_id=lot.pk).update(
        credits_clawed_back=F("credits_clawed_back") + amount
    )
