"""What each Stripe event type does to a purchase. Called only by
`services.stripe_event_process`, inside its transaction and under the stored event's lock.

Only the Checkout Session event that completed the payment grants (`checkout.session.completed`
with `payment_status: paid`, or `checkout.session.async_payment_succeeded`): the contract checks
the Session's `amount_total` and `currency` against the purchase and dates the payment by that
event's `created`. `payment_intent.succeeded` only links the PaymentIntent and its latest Charge
to the purchase, so that refund and dispute events find it; it grants nothing, whether it
arrives before or after the Session event.

Every handler locks the purchase row first (`SELECT ... FOR UPDATE`): two different events about
one payment (`checkout.session.completed` and `payment_intent.succeeded`, or a refund racing the
completion) are applied one after the other, and the second sees what the first did. The lock
order is always event -> purchase -> credit account (inside `credits.services`).

Out-of-order delivery: a refund or dispute that arrives before the payment is recorded on the
purchase; the grant applies it right away.

Auto top-ups (`Purchase.auto_topup`, `credits.payments.autotopup`) have no Checkout Session:
their `payment_intent.succeeded` is the paying event, checked and granted by the same `_pay`
with the PaymentIntent's `amount_received` and `currency`; `payment_intent.payment_failed`
counts their failure. A `checkout.session.completed` in setup mode saves a card.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db.models import Sum

from credits import services as ledger
from credits.models import EntryKind, LedgerEntry, LotSource
from credits.payments.models import Purchase, PurchaseStatus, StripeEvent, StripeEventStatus
from credits.payments.signals import purchase_paid, purchase_reversed

from . import autotopup
from .months import months_after

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str
    purchase: Purchase | None = None
    note: str = ""


class PurchaseNotFound(LookupError):
    """An event about a payment we cannot match yet: retried, then left failed for staff."""


class StripeIdMismatch(ValueError):
    """An event names a Stripe object that contradicts what the purchase already records."""


JSON = dict[str, Any]


def handle(event: StripeEvent) -> Outcome:
    handler = HANDLERS.get(event.type)
    if handler is None:
        return Outcome(StripeEventStatus.IGNORED, note=f"Event type {event.type} is not handled.")
    return handler(event, event.payload["data"]["object"])


# --- finding and linking the purchase --------------------------------------------------------


def _stripe_id(value: Any) -> str | None:
    """An id field that may be a bare id or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _locked_purchase(
    *,
    purchase_id: UUID | None = None,
    checkout_session_id: str | None = None,
    payment_intent_id: str | None = None,
    charge_id: str | None = None,
    dispute_id: str | None = None,
) -> Purchase | None:
    """The purchase an event is about, locked; tried from the most specific id down.

    The lock helper of purchases (lock order: a purchase before its account, see
    `credits/locks.py`). Only the purchase row is locked (`of=("self",)`): the package joined
    in is only read, and locking it would queue every other payment of that package and staff
    editing it behind this event. FOR NO KEY UPDATE, since no key changes: a Stripe event that
    references the purchase can still be inserted meanwhile."""
    rows = Purchase.objects.select_for_update(of=("self",), no_key=True).select_related("package")
    lookups: list[tuple[str, Any]] = [
        ("pk", purchase_id),
        ("checkout_session_id", checkout_session_id),
        ("payment_intent_id", payment_intent_id),
        ("charge_id", charge_id),
        ("dispute_id", dispute_id),
    ]
    for field, value in lookups:
        if value is not None:
            purchase = rows.filter(**{field: value}).first()
            if purchase is not None:
                return purchase
    return None


def _metadata_purchase_id(obj: JSON) -> UUID | None:
    metadata = obj.get("metadata") or {}
    return _uuid(metadata.get("purchase_id")) if isinstance(metadata, dict) else None


def _link(purchase: Purchase, field: str, value: str | None) -> None:
    """Record a Stripe id on the purchase; a different one already recorded is an error."""
    if value is None:
        return
    current = getattr(purchase, field)
    if current and current != value:
        raise StripeIdMismatch(
            f"Purchase {purchase.pk} has {field}={current}, but this event names {value}."
        )
    setattr(purchase, field, value)


def _note(purchase: Purchase, text: str) -> None:
    purchase.status_reason = f"{purchase.status_reason}\n{text}".strip()


# --- the money: grant, refund clawback, dispute clawback --------------------------------------


def _clawed_back(purchase: Purchase) -> int:
    if purchase.lot_id is None:
        return 0
    total = LedgerEntry.objects.filter(lot_id=purchase.lot_id, kind=EntryKind.CLAWBACK).aggregate(
        total=Sum("amount")
    )["total"]
    return -(total or 0)


def _pay(purchase: Purchase, *, amount: Any, currency: Any, event: StripeEvent) -> None:
    """Grant the purchase's credits for a payment of `amount` `currency` made at the event's
    time, once. Called only for the Checkout Session event that completed the payment, with the
    Session's `amount_total` and `currency`. A payment that disagrees with the snapshot is never
    granted: staff review it."""
    if purchase.lot_id is not None or purchase.status == PurchaseStatus.NEEDS_REVIEW:
        # Granted already (a redelivery, or another Session event about the same payment), or a
        # payment already refused for review, which stays with staff. Keep the ids just linked.
        purchase.save()
        return
    currency = str(currency or "").lower()
    purchase.amount_paid = amount if isinstance(amount, int) and amount >= 0 else None
    purchase.currency_paid = currency[:3]
    if amount != purchase.price_amount or currency != purchase.currency:
        purchase.status = PurchaseStatus.NEEDS_REVIEW
        _note(
            purchase,
            f"Paid {amount} {currency or '?'} but the purchase is for {purchase.price_amount} "
            f"{purchase.currency} (event {event.event_id}): no credits granted. Refund the "
            "payment or grant the credits by hand.",
        )
        logger.error("Purchase %s: amount/currency mismatch, not granted", purchase.pk)
        purchase.save()
        return

    paid_at = event.created
    ledger.account_open(user_id=purchase.user_id)  # idempotent; users made by hand lack one
    expires_at = (
        months_after(paid_at, purchase.validity_months) if purchase.validity_months else None
    )
    entry = ledger.credits_grant(
        user_id=purchase.user_id,
        amount=purchase.credits,
        source=LotSource.PURCHASE,
        idempotency_key=f"purchase:{purchase.pk}",
        expires_at=expires_at,
        package=purchase.package.slug,
        reference=f"purchase:{purchase.pk}",
        reason=f"Bought {purchase.package.name} (Stripe event {event.event_id})",
    )
    purchase.lot_id = entry.lot_id
    purchase.paid_at = paid_at
    if purchase.status in (PurchaseStatus.PENDING, PurchaseStatus.FAILED, PurchaseStatus.EXPIRED):
        purchase.status = PurchaseStatus.PAID
    purchase.save()
    purchase_paid.send(sender=Purchase, purchase=purchase)
    # A dispute or refund that arrived before this payment event applies now.
    if purchase.dispute_id:
        _claw_back_dispute(purchase)
        purchase_reversed.send(sender=Purchase, purchase=purchase, cause="dispute")
    elif purchase.amount_refunded:
        _apply_refund(purchase)


def _apply_refund(purchase: Purchase) -> None:
    """Claw back floor(credits x amount_refunded / amount) minus what was already clawed back,
    from the purchase's lot only (clamped by the ledger to its unspent, unheld credits)."""
    if purchase.lot_id is None or purchase.amount_refunded == 0:
        purchase.save()
        return
    refunded = min(purchase.amount_refunded, purchase.price_amount)
    target = purchase.credits * refunded // purchase.price_amount
    if target > 0:
        # The claim is a total: a redelivered charge.refunded, or one older than the last seen,
        # claims nothing more. What live holds cover is taken as they end (the ledger owes it).
        ledger.credits_claw_back(
            user_id=purchase.user_id,
            lot_id=purchase.lot_id,
            claim_up_to=target,
            # One key per cumulative refunded amount: a redelivered charge.refunded finds it.
            idempotency_key=f"refund:{purchase.pk}:{purchase.amount_refunded}",
            reference=f"purchase:{purchase.pk}",
            reason=(
                f"Refund of {purchase.amount_refunded} of {purchase.price_amount} "
                f"{purchase.currency} (charge {purchase.charge_id or 'unknown'})"
            ),
        )
    purchase.credits_clawed_back = _clawed_back(purchase)
    full = refunded >= purchase.price_amount
    became_refunded = False
    if purchase.status in (
        PurchaseStatus.PAID,
        PurchaseStatus.PARTIALLY_REFUNDED,
        PurchaseStatus.PENDING,
    ):
        became_refunded = full
        purchase.status = PurchaseStatus.REFUNDED if full else PurchaseStatus.PARTIALLY_REFUNDED
    purchase.save()
    if became_refunded:
        purchase_reversed.send(sender=Purchase, purchase=purchase, cause="refund")


def _claw_back_dispute(purchase: Purchase) -> None:
    assert purchase.lot_id is not None and purchase.dispute_id
    ledger.credits_claw_back(
        user_id=purchase.user_id,
        lot_id=purchase.lot_id,
        # The whole lot: unheld credit now, held credit as its holds end, the rest was spent.
        claim_up_to=purchase.credits,
        idempotency_key=f"dispute:{purchase.dispute_id}",
        reference=f"purchase:{purchase.pk}",
        reason=f"Payment disputed ({purchase.dispute_id})",
    )
    purchase.credits_clawed_back = _clawed_back(purchase)
    purchase.save()


# --- handlers, one per event type ------------------------------------------------------------


def _session_purchase(obj: JSON) -> Purchase | None:
    return _locked_purchase(
        purchase_id=_metadata_purchase_id(obj) or _uuid(obj.get("client_reference_id")),
        checkout_session_id=_stripe_id(obj.get("id")),
    )


def _not_ours(obj: JSON) -> Outcome:
    return Outcome(
        StripeEventStatus.IGNORED, note=f"{obj.get('object')} {obj.get('id')} is no purchase."
    )


def checkout_session_paid(event: StripeEvent, obj: JSON) -> Outcome:
    """`checkout.session.completed` and `checkout.session.async_payment_succeeded`."""
    if obj.get("mode") == "setup":
        # A card saved for auto top-up: no purchase, no money.
        customer = autotopup.payment_method_completed(session=obj)
        if customer is None:
            return _not_ours(obj)
        return Outcome(StripeEventStatus.PROCESSED, note="The card is fetched after commit.")
    purchase = _session_purchase(obj)
    if purchase is None:
        return _not_ours(obj)
    _link(purchase, "checkout_session_id", _stripe_id(obj.get("id")))
    _link(purchase, "payment_intent_id", _stripe_id(obj.get("payment_intent")))
    if obj.get("payment_status") == "paid":
        _pay(purchase, amount=obj.get("amount_total"), currency=obj.get("currency"), event=event)
        return Outcome(StripeEventStatus.PROCESSED, purchase)
    purchase.save()
    # A delayed payment method (bank debit): async_payment_succeeded/failed follows.
    return Outcome(
        StripeEventStatus.PROCESSED,
        purchase,
        note=f"payment_status is {obj.get('payment_status')}: nothing granted yet.",
    )


def checkout_session_failed(event: StripeEvent, obj: JSON) -> Outcome:
    """`checkout.session.async_payment_failed` and `checkout.session.expired`."""
    purchase = _session_purchase(obj)
    if purchase is None:
        return _not_ours(obj)
    _link(purchase, "checkout_session_id", _stripe_id(obj.get("id")))
    if purchase.status == PurchaseStatus.PENDING and purchase.lot_id is None:
        expired = event.type == "checkout.session.expired"
        purchase.status = PurchaseStatus.EXPIRED if expired else PurchaseStatus.FAILED
        _note(purchase, f"{event.type} ({event.event_id})")
    purchase.save()
    return Outcome(StripeEventStatus.PROCESSED, purchase)


def payment_intent_succeeded(event: StripeEvent, obj: JSON) -> Outcome:
    """For an auto top-up, the payment itself (below). For a Checkout purchase, the same payment
    as the session's. Links the payment intent and its latest charge to the
    purchase (each unique there), so that refund and dispute events, which name only those, find
    it; grants nothing. The grant is the Checkout Session event's (`checkout_session_paid`): its
    `amount_total`/`currency` are what is checked and its `created` is the payment time, so this
    event's `amount_received` and time decide nothing, even when it arrives first."""
    purchase = _locked_purchase(
        purchase_id=_metadata_purchase_id(obj), payment_intent_id=_stripe_id(obj.get("id"))
    )
    if purchase is None:
        return _not_ours(obj)
    _link(purchase, "payment_intent_id", _stripe_id(obj.get("id")))
    _link(purchase, "charge_id", _stripe_id(obj.get("latest_charge")))
    if purchase.auto_topup:
        # No Checkout Session: this event is the payment (also when it arrives before the
        # create call returned: the purchase is found by its metadata, and granted once).
        granted_before = purchase.lot_id is not None
        _pay(purchase, amount=obj.get("amount_received"), currency=obj.get("currency"), event=event)
        if purchase.lot_id is not None and not granted_before:
            autotopup.success_record(purchase)
        return Outcome(StripeEventStatus.PROCESSED, purchase)
    purchase.save()
    if purchase.lot_id is None and purchase.status != PurchaseStatus.NEEDS_REVIEW:
        return Outcome(
            StripeEventStatus.PROCESSED,
            purchase,
            note="Payment intent linked: credits are granted by the Checkout Session event.",
        )
    return Outcome(StripeEventStatus.PROCESSED, purchase)


def payment_intent_failed(event: StripeEvent, obj: JSON) -> Outcome:
    """`payment_intent.payment_failed`: an auto top-up's decline counts a failure (once: only a
    pending purchase counts). A Checkout payment's failed attempt changes nothing (the customer
    may try another card on the page; the session's own events decide)."""
    purchase = _locked_purchase(
        purchase_id=_metadata_purchase_id(obj), payment_intent_id=_stripe_id(obj.get("id"))
    )
    if purchase is None:
        return _not_ours(obj)
    _link(purchase, "payment_intent_id", _stripe_id(obj.get("id")))
    if not purchase.auto_topup:
        purchase.save()
        return Outcome(StripeEventStatus.PROCESSED, purchase, note="A failed attempt.")
    error = obj.get("last_payment_error") or {}
    reason = str(error.get("code") or "payment_failed") if isinstance(error, dict) else ""
    autotopup.failure_record(purchase, reason=reason or "payment_failed")
    purchase.save()
    return Outcome(StripeEventStatus.PROCESSED, purchase)


def _charge_purchase(obj: JSON) -> Purchase:
    purchase = _locked_purchase(
        purchase_id=_metadata_purchase_id(obj),
        charge_id=_stripe_id(obj.get("id")),
        payment_intent_id=_stripe_id(obj.get("payment_intent")),
    )
    if purchase is None:
        # Possibly a charge whose payment event has not arrived yet: fail, so it is retried.
        raise PurchaseNotFound(f"No purchase matches charge {obj.get('id')} yet.")
    _link(purchase, "charge_id", _stripe_id(obj.get("id")))
    _link(purchase, "payment_intent_id", _stripe_id(obj.get("payment_intent")))
    return purchase


def _record_receipt(purchase: Purchase, obj: JSON) -> None:
    """The charge's hosted receipt (`receipt_url`), when it is an https URL that fits. A later
    event of the same charge carries the same receipt, so the last one seen stays."""
    url = obj.get("receipt_url")
    if isinstance(url, str) and url.startswith("https://") and len(url) <= 2000:
        purchase.receipt_url = url


def charge_succeeded(event: StripeEvent, obj: JSON) -> Outcome:
    """Links the charge to the purchase and records its receipt; grants nothing (the Checkout
    Session event does). Before the purchase is known it fails and is retried."""
    purchase = _charge_purchase(obj)
    _record_receipt(purchase, obj)
    purchase.save()
    return Outcome(StripeEventStatus.PROCESSED, purchase)


def charge_refunded(event: StripeEvent, obj: JSON) -> Outcome:
    """Stripe's `amount_refunded` is cumulative; events may come out of order, so the highest
    amount seen wins. Before the grant the refund is only recorded; the grant applies it."""
    purchase = _charge_purchase(obj)
    _record_receipt(purchase, obj)
    refund_record(purchase, amount_refunded=obj.get("amount_refunded"))
    return Outcome(StripeEventStatus.PROCESSED, purchase)


def refund_record(purchase: Purchase, *, amount_refunded: Any) -> None:
    """Stripe's cumulative refunded amount, from `charge.refunded` or from a staff refund's
    confirmation (`refunds.staff_refund_confirm`), on a purchase locked by the caller: the
    highest seen wins, and the claw-back is a total keyed by it, so whichever comes first claws
    back and the other claims nothing more."""
    if isinstance(amount_refunded, int) and amount_refunded > purchase.amount_refunded:
        purchase.amount_refunded = amount_refunded
    if purchase.lot_id is not None:
        _apply_refund(purchase)
    else:
        purchase.save()


def dispute_created(event: StripeEvent, obj: JSON) -> Outcome:
    """Freeze the buyer's account (authorize answers 403) and claw back the lot's unspent,
    unheld credits. Unfreezing is a staff decision, made in the admin."""
    purchase = _locked_purchase(
        dispute_id=_stripe_id(obj.get("id")),
        charge_id=_stripe_id(obj.get("charge")),
        payment_intent_id=_stripe_id(obj.get("payment_intent")),
    )
    if purchase is None:
        raise PurchaseNotFound(f"No purchase matches dispute {obj.get('id')} yet.")
    _link(purchase, "charge_id", _stripe_id(obj.get("charge")))
    _link(purchase, "payment_intent_id", _stripe_id(obj.get("payment_intent")))
    was_disputed = purchase.status == PurchaseStatus.DISPUTED
    purchase.dispute_id = _stripe_id(obj.get("id"))
    purchase.dispute_status = str(obj.get("status") or "")[:32]
    purchase.status = PurchaseStatus.DISPUTED
    _note(purchase, f"Dispute {purchase.dispute_id} opened ({obj.get('reason')}): account frozen.")
    purchase.save()
    ledger.account_open(user_id=purchase.user_id)
    ledger.account_freeze(
        user_id=purchase.user_id,
        reason=f"Payment disputed ({purchase.dispute_id}, purchase {purchase.pk}).",
    )
    if purchase.lot_id is not None:
        _claw_back_dispute(purchase)
        if not was_disputed:
            purchase_reversed.send(sender=Purchase, purchase=purchase, cause="dispute")
    return Outcome(StripeEventStatus.PROCESSED, purchase)


def dispute_closed(event: StripeEvent, obj: JSON) -> Outcome:
    """Record the outcome for staff. A won dispute restores nothing and unfreezes nothing:
    staff decide (admin: unfreeze the buyer, grant credits by hand)."""
    purchase = _locked_purchase(
        dispute_id=_stripe_id(obj.get("id")), charge_id=_stripe_id(obj.get("charge"))
    )
    if purchase is None:
        return _not_ours(obj)
    purchase.dispute_status = str(obj.get("status") or "")[:32]
    _note(
        purchase,
        f"Dispute {obj.get('id')} closed: {purchase.dispute_status}. Nothing restored "
        "automatically; staff decide whether to unfreeze and re-grant.",
    )
    purchase.save()
    return Outcome(StripeEventStatus.PROCESSED, purchase)


HANDLERS: dict[str, Callable[[StripeEvent, JSON], Outcome]] = {
    "checkout.session.completed": checkout_session_paid,
    "checkout.session.async_payment_succeeded": checkout_session_paid,
    "checkout.session.async_payment_failed": checkout_session_failed,
    "checkout.session.expired": checkout_session_failed,
    "payment_intent.succeeded": payment_intent_succeeded,
    "payment_intent.payment_failed": payment_intent_failed,
    "charge.succeeded": charge_succeeded,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": dispute_created,
    "charge.dispute.closed": dispute_closed,
}
