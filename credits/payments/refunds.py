"""Staff refunds from the admin: request, preview, send to Stripe, confirm.

The flow, and the race each step closes:

1. `staff_refund_request` (the admin's form) locks the purchase row, checks the amount against
   what is left to refund (Stripe's cumulative `amount_refunded` plus the staff refunds still on
   their way), and writes a `StaffRefund` row: the outbox. Its send is enqueued on commit, so
   the Stripe call never runs inside the transaction and a rolled-back request sends nothing.
   The form carries the refund's id, made when the form was shown: a double submit inserts the
   same primary key, and the second finds the first (one refund per form).
2. `staff_refund_send` (a Celery task, after commit) creates the Stripe Refund with the
   idempotency key `staff-refund-<id>`, so a retried send (a worker killed after Stripe answered)
   refunds once, and asks for the charge back (`expand[]=charge`) to learn Stripe's cumulative
   `amount_refunded`.
3. `staff_refund_confirm` locks the purchase (then the refund row: the lock order is purchase
   before refund, like event before purchase in the webhook pipeline), raises the purchase's
   `amount_refunded` to Stripe's figure when it is higher, and applies the refund with the same
   function as `charge.refunded` (`handlers.refund_record`). The claw-back is a claim stated as a
   total of the lot, keyed by the cumulative amount: whichever of this confirmation and Stripe's
   `charge.refunded` event is applied first claws back, and the other finds nothing more to
   claim, in either order or at once (the purchase row lock serialises them).

Credits are clawed back only once Stripe has confirmed the refund: a refund Stripe refuses
(already refunded in the Dashboard, a disputed charge) takes nothing from the customer.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Sum

from accounts.models import User
from config.errors import ApplicationError
from credits import clock
from credits import services as ledger
from credits.models import Lot
from credits.payments.models import Purchase, PurchaseStatus, StaffRefund, StaffRefundStatus

from . import handlers
from .client import stripe_client

logger = logging.getLogger(__name__)

REFUNDABLE_STATUSES = (PurchaseStatus.PAID, PurchaseStatus.PARTIALLY_REFUNDED)


class RefundRefused(ApplicationError):
    status_code = 400
    code = "refund_refused"


class RefundSendFailed(Exception):
    """Stripe could not be reached, or answered 5xx or 429: the task retries the same key."""


@dataclass(frozen=True)
class RefundPreview:
    """What refunding `amount` more would claw back: the credits the claim adds, taken now from
    unspent unheld credits, owed (held by live requests, taken as they end) and uncollectable
    (spent already). Claims are "up to": the preview is the split at this moment."""

    amount: int
    refundable: int
    claim: int
    take_now: int
    owed: int
    uncollectable: int


def _pending_amount(purchase: Purchase) -> int:
    total = StaffRefund.objects.filter(
        purchase=purchase, status=StaffRefundStatus.PENDING
    ).aggregate(total=Sum("amount"))["total"]
    return int(total or 0)


def refundable_amount(*, purchase: Purchase) -> int:
    """Minor units still refundable: the price less Stripe's cumulative refunds and the staff
    refunds not yet confirmed (counted twice for a moment if Stripe's event is faster than our
    confirmation: the safe direction)."""
    return max(0, purchase.price_amount - purchase.amount_refunded - _pending_amount(purchase))


def refund_preview(*, purchase: Purchase, amount: int) -> RefundPreview:
    refundable = refundable_amount(purchase=purchase)
    if purchase.lot_id is None:
        return RefundPreview(amount, refundable, 0, 0, 0, 0)
    lot = Lot.objects.get(pk=purchase.lot_id)
    cumulative = min(
        purchase.amount_refunded + _pending_amount(purchase) + amount, purchase.price_amount
    )
    target = purchase.credits * cumulative // purchase.price_amount
    split = ledger.clawback_split(lot=lot, claim_up_to=target, now=clock.now())
    return RefundPreview(
        amount, refundable, split.claim, split.take, split.owed, split.uncollectable
    )


def staff_refund_request(
    *, refund_id: UUID, purchase_id: UUID, amount: int, reason: str, staff: User
) -> StaffRefund:
    """Record a staff refund (the outbox row) and send it to Stripe after commit. Idempotent on
    `refund_id`: the same form submitted twice is one refund."""
    existing = StaffRefund.objects.filter(pk=refund_id).first()
    if existing is not None:
        return existing
    reason = reason.strip()
    if not reason:
        raise RefundRefused("Give a reason for the refund.", field="reason")
    try:
        with transaction.atomic(durable=True):
            # The purchase lock serialises refunds of one purchase with each other and with
            # Stripe's events, so two staff members cannot both refund the last dollar.
            purchase = Purchase.objects.select_for_update().get(pk=purchase_id)
            if purchase.status not in REFUNDABLE_STATUSES or purchase.lot_id is None:
                raise RefundRefused(
                    f"A purchase that is {purchase.get_status_display()} cannot be refunded here.",
                    field="amount",
                )
            if not (purchase.charge_id or purchase.payment_intent_id):
                raise RefundRefused(
                    "Stripe's charge for this purchase is not known yet.", field="amount"
                )
            refundable = refundable_amount(purchase=purchase)
            if amount <= 0 or amount > refundable:
                raise RefundRefused(
                    f"The amount must be between 1 and {refundable} (minor units of "
                    f"{purchase.currency}).",
                    field="amount",
                )
            refund = StaffRefund.objects.create(
                id=refund_id,
                purchase=purchase,
                amount=amount,
                currency=purchase.currency,
                reason=reason,
                created_by=staff,
            )
            transaction.on_commit(lambda: _enqueue(refund.pk))
    except IntegrityError:
        # The same form submitted concurrently: the other request's row won.
        return StaffRefund.objects.get(pk=refund_id)
    return refund


def _enqueue(refund_id: UUID) -> None:
    from .tasks import staff_refund_send_task

    try:
        staff_refund_send_task.delay(str(refund_id))
    except Exception:
        # The row is pending: the beat's requeue (`staff_refunds_requeue_pending`) sends it.
        logger.exception("Could not enqueue staff refund %s; it stays pending", refund_id)


def staff_refund_send(*, refund_id: UUID) -> StaffRefund:
    """Create the Stripe Refund (outside any transaction), then confirm it. A refused refund is
    marked failed with Stripe's message; a transient failure raises `RefundSendFailed` for the
    task to retry with the same idempotency key."""
    refund = StaffRefund.objects.select_related("purchase").get(pk=refund_id)
    if refund.status != StaffRefundStatus.PENDING:
        return refund
    StaffRefund.objects.filter(pk=refund.pk).update(attempts=refund.attempts + 1)
    purchase = refund.purchase
    params: dict[str, Any] = {
        "amount": refund.amount,
        "reason": "requested_by_customer",
        "metadata": {"purchase_id": str(purchase.pk), "staff_refund_id": str(refund.pk)},
        "expand": ["charge"],
    }
    if purchase.charge_id:
        params["charge"] = purchase.charge_id
    else:
        params["payment_intent"] = purchase.payment_intent_id
    try:
        created = stripe_client().v1.refunds.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": refund.stripe_idempotency_key},
        )
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise RefundSendFailed(str(exc)) from exc
    except stripe.StripeError as exc:
        if exc.http_status is not None and exc.http_status >= 500:
            raise RefundSendFailed(str(exc)) from exc
        return _staff_refund_fail(refund_id=refund.pk, error=exc.user_message or str(exc))
    charge = created.get("charge")
    charge_refunded = charge.get("amount_refunded") if isinstance(charge, dict) else None
    return staff_refund_confirm(
        refund_id=refund.pk,
        stripe_refund_id=str(created["id"]),
        charge_amount_refunded=charge_refunded if isinstance(charge_refunded, int) else None,
    )


def _staff_refund_fail(*, refund_id: UUID, error: str) -> StaffRefund:
    with transaction.atomic(durable=True):
        refund = StaffRefund.objects.select_for_update().get(pk=refund_id)
        if refund.status == StaffRefundStatus.PENDING:
            refund.status = StaffRefundStatus.FAILED
            refund.error = error[:2000]
            refund.save(update_fields=["status", "error"])
    logger.warning("Stripe refused staff refund %s: %s", refund_id, error)
    return refund


def staff_refund_confirm(
    *, refund_id: UUID, stripe_refund_id: str, charge_amount_refunded: int | None
) -> StaffRefund:
    """Stripe refunded it: record that and apply the refund to the purchase once (see the
    module docstring for the race with `charge.refunded`)."""
    with transaction.atomic(durable=True):
        purchase_id = StaffRefund.objects.values_list("purchase_id", flat=True).get(pk=refund_id)
        purchase = Purchase.objects.select_for_update().get(pk=purchase_id)
        refund = StaffRefund.objects.select_for_update().get(pk=refund_id)
        if refund.status != StaffRefundStatus.PENDING:
            return refund
        if charge_amount_refunded is None:
            # No charge in the answer: our own confirmed refunds are a lower bound of Stripe's.
            confirmed = StaffRefund.objects.filter(
                purchase=purchase, status=StaffRefundStatus.SUCCEEDED
            ).aggregate(total=Sum("amount"))["total"]
            charge_amount_refunded = int(confirmed or 0) + refund.amount
        refund.status = StaffRefundStatus.SUCCEEDED
        refund.stripe_refund_id = stripe_refund_id
        refund.sent_at = clock.now()
        refund.save(update_fields=["status", "stripe_refund_id", "sent_at"])
        handlers.refund_record(purchase, amount_refunded=charge_amount_refunded)
    return refund


def staff_refunds_requeue_pending() -> list[UUID]:
    """Beat: send refunds whose enqueue was lost (a broker down at commit). Safe to repeat: the
    send is idempotent on its Stripe key and its confirmation on the row's status."""
    # Older than a few minutes: a fresh one is most likely being sent by its own task now.
    stale = clock.now() - timedelta(minutes=5)
    ids = list(
        StaffRefund.objects.filter(
            status=StaffRefundStatus.PENDING, created_at__lt=stale
        ).values_list("pk", flat=True)
    )
    for refund_id in ids:
        _enqueue(refund_id)
    return ids
