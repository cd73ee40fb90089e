"""Purchases and the Stripe webhook pipeline.

Writes go through these functions; views, the Celery task and the admin call them. Credits move
only through `credits.services` (called from `handlers`).

The webhook pipeline has two steps so that Stripe gets its 2xx fast and a slow or failing
handler never loses an event:

1. `stripe_event_verify` checks the signature on the raw bytes (nothing is stored before), then
   `stripe_event_record` inserts the event once (UNIQUE on Stripe's event id) and enqueues its
   processing after the insert commits.
2. `stripe_event_process` runs the handler under a row lock on the stored event, in one
   transaction with the event's new status: a worker killed before that commit leaves the event
   pending and nothing granted; a worker killed after it finds the event processed when the task
   is redelivered. Either way the purchase's grant is keyed on the purchase, so it happens once.
"""

import json
import logging
import math
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from accounts.models import User
from config import broker, observability
from config.errors import ApplicationError
from config.text import storable
from credits import clock
from credits.errors import AccountFrozen, IdempotencyConflict
from credits.models import CreditAccount
from credits.payments.models import (
    Package,
    Purchase,
    StripeEvent,
    StripeEventStatus,
)

from . import handlers
from .client import (
    STRIPE_API_VERSION,
    PaymentProviderError,
    PaymentsUnavailable,
    payments_configured,
    stripe_client,
)

logger = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300
IDEMPOTENCY_KEY_MAX_LENGTH = 255


# --- reads -----------------------------------------------------------------------------------


def packages_visible(*, user: Any) -> QuerySet[Package]:
    return Package.objects.visible_to(user).order_by("price_amount", "slug")


def purchases_of(*, user: User) -> QuerySet[Purchase]:
    return (
        Purchase.objects.filter(user=user)
        .select_related("package", "lot")
        .order_by("-created_at", "-pk")
    )


# --- purchases -------------------------------------------------------------------------------


def purchase_create(
    *, user: User, package_slug: str, idempotency_key: str | None = None
) -> Purchase:
    """A pending purchase of a package the user may buy, with its Stripe Checkout Session.

    The same `idempotency_key` (the client's `Idempotency-Key` header) returns the same purchase
    and checkout URL; used for another package it is a 409. The Stripe call is made outside any
    transaction and with an idempotency key derived from the purchase, so a retry after a
    network failure finds the session Stripe already made instead of creating a second one.
    """
    if not payments_configured():
        raise PaymentsUnavailable("Payments are not available: Stripe is not configured.")
    if idempotency_key is not None:
        if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise ApplicationError(
                f"The Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                "characters long.",
                code="invalid_idempotency_key",
            )
        if any(unicodedata.category(char) in ("Cc", "Cs") for char in idempotency_key):
            # NUL and lone surrogates cannot be stored in PostgreSQL; other control characters
            # could, but no client means them.
            raise ApplicationError(
                "The Idempotency-Key header must not contain control characters.",
                code="invalid_idempotency_key",
            )
        existing = _purchase_by_client_key(user, idempotency_key, package_slug)
        if existing is not None:
            return _checkout_ensure(existing)

    package = packages_visible(user=user).filter(slug=package_slug).first()
    if package is None:
        # The same answer for unknown, inactive and other customers' packages: nothing leaks.
        raise ApplicationError(
            f"There is no package {package_slug!r} available to you.",
            code="unknown_package",
            field="package",
        )
    if CreditAccount.objects.filter(pk=user.pk, frozen_at__isnull=False).exists():
        raise AccountFrozen("This account is frozen; contact support before buying credits.")
    try:
        with transaction.atomic(durable=True):
            purchase = Purchase.objects.create(
                user=user,
                package=package,
                credits=package.credits,
                price_amount=package.price_amount,
                currency=package.currency,
                validity_months=package.validity_months,
                idempotency_key=idempotency_key,
                created_at=clock.now(),
            )
    except IntegrityError:
        # A concurrent retry with the same key inserted first: answer as that one does.
        if idempotency_key is None:
            raise
        existing = _purchase_by_client_key(user, idempotency_key, package_slug)
        if existing is None:
            raise
        purchase = existing
    return _checkout_ensure(purchase)


def _purchase_by_client_key(user: User, key: str, package_slug: str) -> Purchase | None:
    purchase = (
        Purchase.objects.filter(user=user, idempotency_key=key).select_related("package").first()
    )
    if purchase is not None and purchase.package.slug != package_slug:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used to buy another package; nothing was created."
        )
    return purchase


def _checkout_ensure(purchase: Purchase) -> Purchase:
    """Give a purchase its Checkout Session unless it has one."""
    if purchase.checkout_session_id:
        return purchase
    client = stripe_client()
    name = f"{purchase.package.name}: {purchase.credits:,} credits"
    dashboard = settings.DASHBOARD_URL.rstrip("/")
    metadata = {
        "purchase_id": str(purchase.pk),
        "user_id": str(purchase.user_id),
        "package": purchase.package.slug,
    }
    params: stripe.checkout.SessionService.CreateParams = {
        "mode": "payment",
        # The price comes from our snapshot of the package, never from the client.
        "line_items": [
            {
                "price_data": {
                    "currency": purchase.currency,
                    "unit_amount": purchase.price_amount,
                    "product_data": {"name": name},
                },
                "quantity": 1,
            }
        ],
        "client_reference_id": str(purchase.pk),
        "metadata": metadata,
        # Copied onto the PaymentIntent (and its Charge), so refund and dispute events, which
        # carry no Checkout Session, still name the purchase.
        "payment_intent_data": {"metadata": metadata},
        "customer_email": purchase.user.email,
        "success_url": f"{dashboard}/purchases/{purchase.pk}?checkout=success",
        "cancel_url": f"{dashboard}/purchases/{purchase.pk}?checkout=cancelled",
    }
    try:
        session = client.v1.checkout.sessions.create(
            params=params, options={"idempotency_key": f"purchase-{purchase.pk}-checkout"}
        )
    except stripe.StripeError as exc:
        logger.warning("Stripe refused a Checkout Session for purchase %s: %s", purchase.pk, exc)
        raise PaymentProviderError(
            "The payment provider could not start a checkout; try again in a moment."
        ) from exc
    # Conditional: a concurrent retry got the same session (same Stripe idempotency key).
    Purchase.objects.filter(pk=purchase.pk, checkout_session_id__isnull=True).update(
        checkout_session_id=session.id, checkout_url=session.url or ""
    )
    purchase.refresh_from_db()
    return purchase


# --- webhooks --------------------------------------------------------------------------------


def stripe_event_verify(*, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event in `payload` if Stripe signed it within the last 300 s and it can be stored;
    else a 400."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise PaymentsUnavailable("Payments are not available: Stripe is not configured.")
    if not signature:
        raise ApplicationError("The Stripe-Signature header is missing.", code="invalid_signature")
    try:
        stripe.Webhook.construct_event(
            payload, signature, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as exc:
        raise ApplicationError(
            "The Stripe signature does not match this payload or is older than 300 seconds.",
            code="invalid_signature",
        ) from exc
    except (ValueError, AttributeError, TypeError, RecursionError) as exc:
        # ValueError: not JSON (or not UTF-8). AttributeError/TypeError: signed JSON that is not
        # an object (a list, a number): stripe's Event constructor calls `.get` on it.
        # RecursionError: JSON nested deeper than the parser goes.
        raise ApplicationError("The body is not a Stripe event.", code="invalid_payload") from exc
    if _signature_timestamp(signature) > time.time() + WEBHOOK_TOLERANCE_SECONDS:
        # stripe's check is one-sided (older than the tolerance): a signature dated in the
        # future would stay replayable until long after it was made. Stripe signs at sending
        # time, so only a wrong clock (ours or an attacker's choice) gets here.
        raise ApplicationError(
            "The Stripe signature is dated more than 300 seconds in the future.",
            code="invalid_signature",
        )
    event = json.loads(payload)
    data = event.get("data") if isinstance(event, dict) else None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise ApplicationError("The body is not a Stripe event.", code="invalid_payload")
    _stripe_event_check_storable(event)
    return event


def _signature_timestamp(signature: str) -> int:
    """The `t=` of a Stripe-Signature header that stripe has verified (so it is there)."""
    for item in signature.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            return int(value)
    raise AssertionError("a verified Stripe-Signature header has a timestamp")


EVENT_ID_MAX_LENGTH = StripeEvent._meta.get_field("event_id").max_length or 255


def _stripe_event_check_storable(event: dict[str, Any]) -> None:
    """A 400 for a signed event that `stripe_event_record` could never store: Stripe retries a
    4xx, but no retry of such an event can succeed, and it must not be a 500."""
    event_id, created = event["id"], event["created"]
    problem: tuple[str, str | None] | None = None
    if not 1 <= len(event_id) <= EVENT_ID_MAX_LENGTH or not storable(event_id):
        problem = (
            f"The event id must be 1 to {EVENT_ID_MAX_LENGTH} characters, "
            "without NUL or unpaired surrogates.",
            "id",
        )
    elif isinstance(created, bool) or _timestamp_to_datetime(created) is None:
        problem = ("The event's created time is not a Unix timestamp.", "created")
    elif (where := _unstorable_json(event)) is not None:
        problem = (f"The event contains {where}, which cannot be stored.", None)
    if problem is None:
        return
    message, field = problem
    # Only an id that prints as is goes to the log (no NUL, surrogate, newline or other control).
    printable = event_id if len(event_id) <= EVENT_ID_MAX_LENGTH and event_id.isprintable() else ""
    logger.warning(
        "Refused signed Stripe event %s: %s",
        printable or "(id not printable)",
        message,
    )
    raise ApplicationError(message, code="invalid_payload", field=field)


def _timestamp_to_datetime(timestamp: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _unstorable_json(value: Any) -> str | None:
    """What in a parsed JSON document jsonb would refuse, or None. Iterative: the document may
    be nested as deep as the JSON parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not storable(key):
                    return "a NUL or an unpaired surrogate in a key"
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if not storable(item):
                return "a NUL or an unpaired surrogate in a string"
        elif isinstance(item, float) and not math.isfinite(item):
            return "NaN or Infinity"
    return None


def stripe_event_record(*, event: dict[str, Any]) -> tuple[StripeEvent, bool]:
    """Store a verified event once and enqueue its processing. Returns (event, created).

    A redelivery of an event that is still pending or failed is enqueued again: processing is
    idempotent, and it may be the delivery whose first task was lost.
    """
    with transaction.atomic(durable=True):
        stored, created = StripeEvent.objects.get_or_create(
            event_id=event["id"],
            defaults={
                "type": event["type"][:100],
                "livemode": bool(event.get("livemode")),
                "api_version": str(event.get("api_version") or "")[:32],
                "created": datetime.fromtimestamp(event["created"], UTC),
                "payload": event,
                "received_at": clock.now(),
            },
        )
        if stored.status in (StripeEventStatus.PENDING, StripeEventStatus.FAILED):
            event_id = stored.event_id
            transaction.on_commit(lambda: _enqueue(event_id))
    if stored.api_version and stored.api_version != STRIPE_API_VERSION:
        logger.warning(
            "Stripe event %s is in API version %s, not the pinned %s: check the endpoint.",
            stored.event_id,
            stored.api_version,
            STRIPE_API_VERSION,
        )
    return stored, created


def _enqueue(event_id: str, *, retry: bool = True) -> None:
    from .tasks import stripe_event_process_task

    try:
        # Off the request's thread: a hung broker must not hold Stripe's answer.
        broker.publish_soon(stripe_event_process_task, event_id, retry=retry)
    except Exception:
        # The event is stored: staff can reprocess it; Stripe must still get its 2xx.
        logger.exception("Could not enqueue Stripe event %s; it stays unprocessed", event_id)


def stripe_event_process(*, event_id: str) -> StripeEvent:
    """Apply a stored event (idempotent). A processed or ignored event is left alone; a pending or
    failed one is (re)run. A handler error rolls back everything the handler did and records the
    error on the event (status `failed`), for Celery's retries or staff's "reprocess"."""
    with transaction.atomic(durable=True):
        # The lock serialises concurrent deliveries and redelivered tasks of one event.
        event = StripeEvent.objects.select_for_update().get(event_id=event_id)
        if event.status in (StripeEventStatus.PROCESSED, StripeEventStatus.IGNORED):
            return event
        event.attempts += 1
        try:
            with transaction.atomic():
                outcome = handlers.handle(event)
        except Exception as exc:
            logger.exception("Stripe event %s (%s) failed", event.event_id, event.type)
            event.status = StripeEventStatus.FAILED
            event.error = f"{type(exc).__name__}: {exc}"[:4000]
        else:
            event.status = outcome.status
            event.error = outcome.note
            event.purchase = outcome.purchase
            event.processed_at = clock.now()
        event.save()
    observability.count_webhook_event(event_type=event.type, result=str(event.status))
    return event


STALE_PENDING = timedelta(minutes=5)


def stripe_events_requeue_stale(*, limit: int = 500) -> list[str]:
    """Enqueue again the events still pending `STALE_PENDING` after they arrived: their first
    enqueue was lost (broker down when the webhook was answered; Stripe got its 2xx and will not
    redeliver). Failed events are left to Celery's retries and staff's "reprocess"."""
    cutoff = clock.now() - STALE_PENDING
    stale = list(
        StripeEvent.objects.filter(status=StripeEventStatus.PENDING, received_at__lte=cutoff)
        .order_by("received_at")
        .values_list("event_id", flat=True)[:limit]
    )
    for event_id in stale:
        _enqueue(event_id)
    return stale


# Failed events Celery has given up on (its 8 retries span about 42 minutes) are tried again
# once an hour, for 30 days: a refund or dispute whose payment is not known yet would otherwise
# stay failed for good, and the credits it claws back stay spendable.
LONG_TAIL_AFTER = timedelta(hours=1)
LONG_TAIL_FOR = timedelta(days=30)
alerts = logging.getLogger("credits.payments.alerts")


def stripe_events_requeue_failed(*, limit: int = 500) -> list[str]:
    """Enqueue once more (one attempt each, no Celery retries) every event that is still failed
    `LONG_TAIL_AFTER` after it arrived and not older than `LONG_TAIL_FOR`, and alert staff about
    each of them (an ERROR on the `credits.payments.alerts` logger, every run until it is fixed;
    an event past `LONG_TAIL_FOR` is named once more as given up)."""
    now = clock.now()
    failed = StripeEvent.objects.filter(
        status=StripeEventStatus.FAILED, received_at__lte=now - LONG_TAIL_AFTER
    ).order_by("received_at")
    due = list(
        failed.filter(received_at__gt=now - LONG_TAIL_FOR).values_list(
            "event_id", "type", "attempts", "error"
        )[:limit]
    )
    for event_id, event_type, attempts, error in due:
        alerts.error(
            "Stripe event %s (%s) has failed %d times and is retried hourly; "
            "staff: fix its cause or reprocess it in the admin. Last error: %s",
            event_id,
            event_type,
            attempts,
            error[:200],
        )
        _enqueue(event_id, retry=False)
    # Given up on in the hour after the window closed: named once, then left to staff.
    for event_id, event_type in failed.filter(
        received_at__lte=now - LONG_TAIL_FOR,
        received_at__gt=now - LONG_TAIL_FOR - LONG_TAIL_AFTER,
    ).values_list("event_id", "type")[:limit]:
        alerts.critical(
            "Stripe event %s (%s) is no longer retried after %d days: reprocess it by hand.",
            event_id,
            event_type,
            LONG_TAIL_FOR.days,
        )
    return [event_id for event_id, *_ in due]


def stripe_events_reprocess(*, event_ids: list[str]) -> dict[str, str]:
    """Run failed (or never processed) events again; returns each one's new status."""
    return {event_id: stripe_event_process(event_id=event_id).status for event_id in event_ids}
