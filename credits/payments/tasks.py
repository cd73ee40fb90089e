"""The Celery task that applies a stored Stripe event. Thin, takes the event's id, idempotent:
with acks_late a worker killed mid-task gets it redelivered, and the stored event's status (set
in the same transaction as the handler's writes) makes the second run a no-op."""

from celery import Task, shared_task

from config import observability
from credits.payments.models import StripeEventStatus

from . import services

# Task failures and retries of this worker process are counted (config/observability.py).
observability.connect_task_signals()

MAX_RETRIES = 8


@shared_task(
    bind=True,
    name="credits.payments.stripe_event_process",
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
)
def stripe_event_process_task(self: Task, event_id: str, retry: bool = True) -> str:
    event = services.stripe_event_process(event_id=event_id)
    # `retry=False`: one attempt of the hourly long tail (stripe_events_requeue_failed).
    if event.status == StripeEventStatus.FAILED and retry and not self.request.is_eager:
        # Out-of-order delivery (a refund or dispute before the payment it belongs to) is
        # usually fixed by waiting: back off 10 s, 20 s, ... up to ~21 min in total. Run eagerly
        # (no broker) a retry would come at once and find nothing changed, so a failed event
        # waits for staff's "reprocess" instead.
        raise self.retry(countdown=10 * 2**self.request.retries)
    return str(event.status)


@shared_task(name="credits.payments.stripe_events_requeue_stale", ignore_result=True)
def stripe_events_requeue_stale_task() -> int:
    """Beat: pick up events whose processing was never enqueued (see the service)."""
    return len(services.stripe_events_requeue_stale())


@shared_task(name="credits.payments.stripe_events_requeue_failed", ignore_result=True)
def stripe_events_requeue_failed_task() -> int:
    """Beat, hourly: the long tail of failed events, and staff's alert about them."""
    return len(services.stripe_events_requeue_failed())


@shared_task(
    bind=True,
    name="credits.payments.staff_refund_send",
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
)
def staff_refund_send_task(self: Task, refund_id: str) -> str:
    """Send a staff refund to Stripe after its request committed (the outbox row), retried with
    back-off while Stripe is unreachable: the Stripe idempotency key makes a retry refund once."""
    from uuid import UUID

    from .refunds import RefundSendFailed, staff_refund_send

    try:
        return str(staff_refund_send(refund_id=UUID(refund_id)).status)
    except RefundSendFailed as exc:
        if self.request.is_eager:
            # No broker: the row stays pending for the beat's requeue.
            return "pending"
        raise self.retry(countdown=10 * 2**self.request.retries, exc=exc) from exc


@shared_task(name="credits.payments.staff_refunds_requeue_pending", ignore_result=True)
def staff_refunds_requeue_pending_task() -> int:
    from .refunds import staff_refunds_requeue_pending

    return len(staff_refunds_requeue_pending())


@shared_task(name="credits.payments.auto_topup_claim", acks_late=True, ignore_result=True)
def auto_topup_claim_task(user_id: str) -> str | None:
    """After the ledger stamped an account: claim it, start its top-up if it may start."""
    from uuid import UUID

    from .autotopup import auto_topup_claim

    purchase = auto_topup_claim(user_id=UUID(user_id))
    return str(purchase.pk) if purchase is not None else None


@shared_task(
    bind=True,
    name="credits.payments.auto_topup_charge",
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
)
def auto_topup_charge_task(self: Task, purchase_id: str) -> str:
    """Create the off-session PaymentIntent of a pending auto top-up (its outbox row), retried
    with back-off while Stripe is unreachable: the idempotency key makes a retry charge once."""
    from uuid import UUID

    from .autotopup import ChargeSendFailed, auto_topup_charge

    try:
        return str(auto_topup_charge(purchase_id=UUID(purchase_id)).status)
    except ChargeSendFailed as exc:
        if self.request.is_eager:
            # No broker: the purchase stays pending for the beat's sweep.
            return "pending"
        raise self.retry(countdown=10 * 2**self.request.retries, exc=exc) from exc


@shared_task(name="credits.payments.auto_topups_sweep", ignore_result=True)
def auto_topups_sweep_task() -> int:
    """Beat, every ~10 s: stamped accounts whose kick was lost, charges whose task was lost."""
    from .autotopup import auto_topups_sweep

    return auto_topups_sweep()


@shared_task(
    bind=True,
    name="credits.payments.payment_method_fetch",
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
)
def payment_method_fetch_task(self: Task, user_id: str) -> None:
    """After a setup Checkout completed: read the saved card from Stripe and store it."""
    from uuid import UUID

    from .autotopup import ChargeSendFailed, payment_method_fetch

    try:
        payment_method_fetch(user_id=UUID(user_id))
    except ChargeSendFailed as exc:
        if self.request.is_eager:
            return  # no broker: the beat's sweep fetches it
        raise self.retry(countdown=10 * 2**self.request.retries, exc=exc) from exc
