"""Auto top-up: a saved card, the configuration, and the off-session charge that keeps a
customer's balance up, at most once per trigger and within a monthly limit.

The card: `POST /api/user/payment-method` makes the user's Stripe Customer once (Stripe
idempotency key from the user id) and a Checkout Session in setup mode; its
`checkout.session.completed` records the SetupIntent, and a task after commit reads the card from
Stripe and stores its ids and display fields (a conditional update: a card removed meanwhile
stays removed).

The flow, and the race each step closes:

1. **The trigger** is the ledger's: an entry that takes the balance from at least the account's
   `auto_topup_threshold` to below it stamps `auto_topup_requested_at` on the account row in the
   same write (`credits.services._auto_topup_mark`, and `gateway_settle.sql` on the hot path, at
   no extra statement). The ledger then kicks us (`credits.signals.auto_topup_requested`, after
   commit); a beat sweep every ~10 s (`auto_topups_sweep`) picks up a lost kick.
2. **The claim** (`auto_topup_claim`) clears the stamp with a conditional UPDATE, which also
   locks the account row: of a kick and the sweep racing, or twenty settles' kicks, one changes
   the row; the others wait for it, then find the stamp gone. Under that account lock it checks
   (enabled, a card saved, not frozen, none pending, the UTC month's auto top-ups plus this one
   within `monthly_limit`) and inserts the pending purchase: the outbox row of the charge. The
   partial unique index `purchase_one_pending_auto_topup` makes a second pending one impossible
   even for a path that forgot the lock. Over the limit, `auto_topup.limit_reached` is written
   once per user and month (its cause names the month).
3. **The charge** (`auto_topup_charge`, a task after commit; the sweep retries a purchase left
   pending without a PaymentIntent) creates an off-session PaymentIntent, confirmed at once,
   outside any transaction, with the Stripe idempotency key `purchase-<id>-auto-topup`: a retry
   after a timeout gets the PaymentIntent Stripe already made, never a second charge.
4. **The grant** is the webhook's, through the purchase path of every purchase
   (`handlers.payment_intent_succeeded`): expiry from the event's time, the referral's first
   payment, refunds and disputes as for Checkout, once (the grant is keyed by the purchase),
   whether the event arrives before the create call returned or twice.
5. **Failures** (`payment_intent.payment_failed`, a `card_error` from the create call, a
   PaymentIntent left needing authentication) fail the purchase once (only a pending one
   counts), fire `auto_topup.failed`, and after `MAX_FAILURES` in a row turn auto top-up off
   with a `disabled_reason`; a success resets the count.

Lock order (as `credits.locks`): the purchase, then the credit account, then the auto top-up
row. The claim locks only the account (and reads the configuration).
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum

from accounts.models import User
from config import broker
from config.errors import ApplicationError
from credits import clock, locks
from credits import services as ledger
from credits.events import event_record
from credits.models import CreditAccount, EventType

from .client import PaymentProviderError, stripe_client
from .models import (
    AutoTopup,
    AutoTopupDisabledReason,
    Package,
    Purchase,
    PurchaseStatus,
    StripeCustomer,
)

logger = logging.getLogger(__name__)

MAX_FAILURES = 3


class PaymentMethodRequired(ApplicationError):
    status_code = 400
    code = "payment_method_required"


class ChargeSendFailed(Exception):
    """Stripe could not be reached, or answered 5xx or 429: the task retries (a charge with
    the same idempotency key)."""


def _month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# --- the Stripe customer and its saved card ----------------------------------------------------


def stripe_customer_ensure(*, user: User) -> StripeCustomer:
    """The user's Stripe Customer, created once. Two concurrent first calls both ask Stripe with
    the idempotency key of the user id (Stripe answers both with the same customer) and both
    insert its id; the primary key (the user) keeps one row, the second insert finds it."""
    existing = StripeCustomer.objects.filter(user=user).first()
    if existing is not None:
        return existing
    try:
        customer = stripe_client().v1.customers.create(
            params={"email": user.email, "metadata": {"user_id": str(user.pk)}},
            options={"idempotency_key": f"customer-{user.pk}"},
        )
    except stripe.StripeError as exc:
        logger.warning("Stripe refused a Customer for user %s: %s", user.pk, exc)
        raise PaymentProviderError(
            "The payment provider could not be reached; try again in a moment."
        ) from exc
    try:
        with transaction.atomic():
            return StripeCustomer.objects.create(user=user, customer_id=customer.id)
    except IntegrityError:
        return StripeCustomer.objects.get(user=user)


def payment_method_setup_start(*, user: User) -> str:
    """The URL of a Checkout Session in setup mode that saves a card on the user's customer.
    No money moves: a retried POST makes another session, which is harmless."""
    customer = stripe_customer_ensure(user=user)
    dashboard = settings.DASHBOARD_URL.rstrip("/")
    try:
        session = stripe_client().v1.checkout.sessions.create(
            params={
                "mode": "setup",
                "customer": customer.customer_id,
                "payment_method_types": ["card"],
                "client_reference_id": str(user.pk),
                "metadata": {"user_id": str(user.pk), "purpose": "auto_topup_payment_method"},
                "success_url": f"{dashboard}/settings/auto-topup?setup=success",
                "cancel_url": f"{dashboard}/settings/auto-topup?setup=cancelled",
            }
        )
    except stripe.StripeError as exc:
        logger.warning("Stripe refused a setup session for user %s: %s", user.pk, exc)
        raise PaymentProviderError(
            "The payment provider could not start a checkout; try again in a moment."
        ) from exc
    return session.url or ""


def payment_method_of(*, user: User) -> StripeCustomer | None:
    """The user's customer row when a card is saved on it."""
    return StripeCustomer.objects.filter(user=user, payment_method_id__isnull=False).first()


def payment_method_completed(*, session: dict[str, Any]) -> StripeCustomer | None:
    """A setup-mode Checkout Session completed (`checkout.session.completed`, inside the event's
    transaction): remember its SetupIntent and fetch the card after commit (a Stripe call is
    never made inside a transaction). None when the session is not one of ours."""
    customer_id = session.get("customer")
    customer_id = customer_id.get("id") if isinstance(customer_id, dict) else customer_id
    setup_intent_id = session.get("setup_intent")
    if isinstance(setup_intent_id, dict):
        setup_intent_id = setup_intent_id.get("id")
    customer = (
        StripeCustomer.objects.select_for_update().filter(customer_id=customer_id).first()
        if isinstance(customer_id, str)
        else None
    )
    if customer is None or not isinstance(setup_intent_id, str):
        return None
    if customer.setup_session_id == session.get("id"):
        return customer  # a redelivery: handled (and the card may have been removed since)
    customer.setup_session_id = str(session.get("id") or "")[:255]
    customer.pending_setup_intent_id = setup_intent_id[:255]
    customer.save(update_fields=["setup_session_id", "pending_setup_intent_id"])
    user_id = customer.pk
    transaction.on_commit(lambda: _enqueue_fetch(user_id))
    return customer


def _enqueue_fetch(user_id: UUID) -> None:
    from .tasks import payment_method_fetch_task

    try:
        broker.publish_soon(payment_method_fetch_task, str(user_id))
    except Exception:
        logger.exception("Could not enqueue the card fetch of user %s; the sweep does", user_id)


def payment_method_fetch(*, user_id: UUID) -> StripeCustomer | None:
    """Read the pending SetupIntent's card from Stripe (outside any transaction) and store its
    ids and display fields, unless the card was removed or another setup completed meanwhile
    (a conditional update on the pending SetupIntent). Stripe away: `ChargeSendFailed`."""
    customer = StripeCustomer.objects.filter(pk=user_id).first()
    if customer is None or not customer.pending_setup_intent_id:
        return customer
    pending = customer.pending_setup_intent_id
    try:
        intent = stripe_client().v1.setup_intents.retrieve(
            pending, params={"expand": ["payment_method"]}
        )
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise ChargeSendFailed(str(exc)) from exc
    except stripe.StripeError as exc:
        if exc.http_status is None or exc.http_status >= 500:
            raise ChargeSendFailed(str(exc)) from exc
        logger.warning("SetupIntent %s of user %s: %s", pending, user_id, exc)
        intent = None
    method = intent.get("payment_method") if intent is not None else None
    card = method.get("card") if method else None
    fields: dict[str, Any] = {"pending_setup_intent_id": ""}
    if intent is not None and intent.get("status") == "succeeded" and method and card:
        fields.update(
            payment_method_id=str(method["id"])[:255],
            card_brand=str(card.get("brand") or "")[:32],
            card_last4=str(card.get("last4") or "")[:4],
            card_exp_month=card.get("exp_month"),
            card_exp_year=card.get("exp_year"),
            payment_method_saved_at=clock.now(),
        )
    else:
        logger.warning("SetupIntent %s of user %s saved no card", pending, user_id)
    StripeCustomer.objects.filter(pk=user_id, pending_setup_intent_id=pending).update(**fields)
    return StripeCustomer.objects.get(pk=user_id)


def payment_method_remove(*, user: User) -> None:
    """Forget the saved card and turn auto top-up off (idempotent). A top-up already pending
    finds no card when it is charged and fails."""
    with transaction.atomic(durable=True):
        ledger.account_open(user_id=user.pk)
        locks.account_lock(user.pk)
        StripeCustomer.objects.filter(user=user).update(
            payment_method_id=None,
            card_brand="",
            card_last4="",
            card_exp_month=None,
            card_exp_year=None,
        )
        config = AutoTopup.objects.select_for_update().filter(user=user).first()
        if config is not None and config.enabled:
            config.enabled = False
            config.disabled_reason = AutoTopupDisabledReason.PAYMENT_METHOD_REMOVED
            config.save()
        ledger.auto_topup_threshold_set(user_id=user.pk, threshold=None)


# --- the configuration -----------------------------------------------------------------------


def auto_topup_of(*, user: User) -> AutoTopup:
    """The user's configuration (an unsaved, disabled one if they never set it)."""
    return AutoTopup.objects.filter(user=user).select_related("package").first() or AutoTopup(
        user=user
    )


def auto_topup_set(
    *, user: User, enabled: bool, threshold: int, package_slug: str, monthly_limit: int
) -> AutoTopup:
    """Replace the configuration. The package must be one the user may buy, the limit at least
    its price, and turning it on needs a saved card. The ledger account carries the threshold
    while it is on (set in the same transaction)."""
    package = Package.objects.visible_to(user).filter(slug=package_slug).first()
    if package is None:
        raise ApplicationError(
            f"There is no package {package_slug!r} available to you.",
            code="unknown_package",
            field="package",
        )
    if monthly_limit < package.price_amount:
        raise ApplicationError(
            f"monthly_limit must be at least the package's price ({package.price_amount}).",
            code="min_value",
            field="monthly_limit",
        )
    with transaction.atomic(durable=True):
        ledger.account_open(user_id=user.pk)
        locks.account_lock(user.pk)  # lock order: account, then the auto top-up row
        if (
            enabled
            and not StripeCustomer.objects.filter(
                user=user, payment_method_id__isnull=False
            ).exists()
        ):
            raise PaymentMethodRequired(
                "Save a card first (POST /api/user/payment-method).", field="enabled"
            )
        config, _ = AutoTopup.objects.select_for_update().get_or_create(user=user)
        config.threshold = threshold
        config.package = package
        config.monthly_limit = monthly_limit
        if enabled and not config.enabled:
            # Turned on again: a fresh run, the reason it was turned off is history.
            config.failures = 0
            config.disabled_reason = ""
        config.enabled = enabled
        config.save()
        ledger.auto_topup_threshold_set(user_id=user.pk, threshold=threshold if enabled else None)
        return config


# --- the claim: one pending top-up per trigger -----------------------------------------------


def auto_topup_claim(*, user_id: UUID) -> Purchase | None:
    """Claim the account's stamp and start its top-up if it may start; None otherwise."""
    with transaction.atomic(durable=True):
        # The claim and the account lock in one statement (see the module docstring).
        claimed = CreditAccount.objects.filter(
            pk=user_id, auto_topup_requested_at__isnull=False
        ).update(auto_topup_requested_at=None)
        if not claimed:
            return None
        account = CreditAccount.objects.get(pk=user_id)
        purchase = _start(account)
    if purchase is not None:
        logger.info("Auto top-up %s started for user %s", purchase.pk, user_id)
    return purchase


def _start(account: CreditAccount) -> Purchase | None:
    """Under the account lock: the checks, then the pending purchase (the charge's outbox)."""
    user_id = account.pk
    config = AutoTopup.objects.filter(user_id=user_id, enabled=True).first()
    if config is None or account.frozen_at is not None:
        return None  # no top-up for a frozen account (the dispute is with staff)
    if config.threshold is None or config.package_id is None:
        return None
    if account.balance >= config.threshold:
        return None  # credit came back before the claim: nothing to top up
    if not StripeCustomer.objects.filter(user_id=user_id, payment_method_id__isnull=False).exists():
        return None
    user = User.objects.get(pk=user_id)
    package = Package.objects.visible_to(user).filter(pk=config.package_id).first()
    if package is None:
        logger.warning("Auto top-up of user %s: package no longer available", user_id)
        return None
    ours = Purchase.objects.filter(user_id=user_id, auto_topup=True)
    if ours.filter(status=PurchaseStatus.PENDING).exists():
        return None  # one at a time: the pending one tops up
    now = clock.now()
    month = _month_start(now)
    # Every auto top-up of the month that was (or may still be) charged counts.
    charged = (
        ours.filter(created_at__gte=month, currency=package.currency)
        .exclude(status=PurchaseStatus.FAILED)
        .aggregate(total=Sum("price_amount"))["total"]
        or 0
    )
    assert config.monthly_limit is not None
    if charged + package.price_amount > config.monthly_limit:
        event_record(
            user_id=user_id,
            type=EventType.AUTO_TOPUP_LIMIT_REACHED,
            data={"reason": f"The monthly limit of {config.monthly_limit} is reached."},
            cause=f"auto_topup.limit_reached:{user_id}:{month:%Y-%m}",
        )
        return None
    purchase = Purchase.objects.create(
        user_id=user_id,
        package=package,
        credits=package.credits,
        price_amount=package.price_amount,
        currency=package.currency,
        validity_months=package.validity_months,
        auto_topup=True,
        created_at=now,
    )
    purchase_id = purchase.pk
    transaction.on_commit(lambda: _enqueue_charge(purchase_id))
    return purchase


def _enqueue_claim(user_id: UUID) -> None:
    from .tasks import auto_topup_claim_task

    try:
        broker.publish_soon(auto_topup_claim_task, str(user_id))
    except Exception:
        # The stamp stays on the account: the beat sweep claims it.
        logger.exception("Could not enqueue the auto top-up claim of user %s", user_id)


def _enqueue_charge(purchase_id: UUID) -> None:
    from .tasks import auto_topup_charge_task

    try:
        broker.publish_soon(auto_topup_charge_task, str(purchase_id))
    except Exception:
        logger.exception("Could not enqueue auto top-up %s; the sweep sends it", purchase_id)


def auto_topup_requested_kick(*, user_id: UUID) -> None:
    """The ledger stamped an account: claim it once the stamp has committed."""
    transaction.on_commit(lambda: _enqueue_claim(user_id))


# Pending top-ups whose charge task was lost are sent again after this long (a fresh one is
# most likely being sent by its own task).
STALE_CHARGE_SECONDS = 60


def auto_topups_sweep(*, limit: int = 500) -> int:
    """Beat: claim stamped accounts whose kick was lost, and send again the pending top-ups that
    have no PaymentIntent yet (their task was lost, or Stripe was away). Safe to repeat."""
    stamped = list(
        CreditAccount.objects.filter(auto_topup_requested_at__isnull=False)
        .order_by("auto_topup_requested_at")
        .values_list("pk", flat=True)[:limit]
    )
    for user_id in stamped:
        auto_topup_claim(user_id=user_id)
    cutoff = clock.now() - timedelta(seconds=STALE_CHARGE_SECONDS)
    stale = list(
        Purchase.objects.filter(
            auto_topup=True,
            status=PurchaseStatus.PENDING,
            payment_intent_id__isnull=True,
            created_at__lte=cutoff,
        ).values_list("pk", flat=True)[:limit]
    )
    for purchase_id in stale:
        _enqueue_charge(purchase_id)
    fetches = list(
        StripeCustomer.objects.exclude(pending_setup_intent_id="").values_list("pk", flat=True)[
            :limit
        ]
    )
    for user_id in fetches:
        _enqueue_fetch(user_id)
    return len(stamped) + len(stale) + len(fetches)


# --- the charge --------------------------------------------------------------------------------


def auto_topup_idempotency_key(purchase: Purchase) -> str:
    return f"purchase-{purchase.pk}-auto-topup"


def auto_topup_charge(*, purchase_id: UUID) -> Purchase:
    """Create the purchase's off-session PaymentIntent (outside any transaction), once: the
    Stripe idempotency key is derived from the purchase. The grant is the webhook's. A refused
    card fails the purchase; a transient error raises `ChargeSendFailed` for a retry."""
    purchase = Purchase.objects.select_related("package").get(pk=purchase_id)
    if not purchase.auto_topup or purchase.status != PurchaseStatus.PENDING:
        return purchase
    if purchase.payment_intent_id:
        return purchase  # created already (or its webhook came first): the webhook decides
    customer = StripeCustomer.objects.filter(user_id=purchase.user_id).first()
    if customer is None or not customer.payment_method_id:
        return auto_topup_fail(purchase_id=purchase.pk, reason="payment_method_removed")
    if not AutoTopup.objects.filter(user_id=purchase.user_id, enabled=True).exists():
        return auto_topup_fail(purchase_id=purchase.pk, reason="auto_topup_disabled", count=False)
    metadata = {
        "purchase_id": str(purchase.pk),
        "user_id": str(purchase.user_id),
        "package": purchase.package.slug,
        "auto_topup": "true",
    }
    try:
        intent = stripe_client().v1.payment_intents.create(
            params={
                "amount": purchase.price_amount,
                "currency": purchase.currency,
                "customer": customer.customer_id,
                "payment_method": customer.payment_method_id,
                "off_session": True,
                "confirm": True,
                "description": f"Auto top-up: {purchase.package.name}",
                "metadata": metadata,
            },
            options={"idempotency_key": auto_topup_idempotency_key(purchase)},
        )
    except stripe.CardError as exc:
        error = exc.error
        intent_obj = getattr(error, "payment_intent", None) if error is not None else None
        intent_id = intent_obj.get("id") if intent_obj else None
        return auto_topup_fail(
            purchase_id=purchase.pk, reason=exc.code or "card_error", payment_intent_id=intent_id
        )
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise ChargeSendFailed(str(exc)) from exc
    except stripe.StripeError as exc:
        if exc.http_status is None or exc.http_status >= 500:
            raise ChargeSendFailed(str(exc)) from exc
        return auto_topup_fail(purchase_id=purchase.pk, reason=exc.code or "payment_refused")
    # Conditional: a `payment_intent.succeeded` that came first has linked it already.
    Purchase.objects.filter(pk=purchase.pk, payment_intent_id__isnull=True).update(
        payment_intent_id=intent.id
    )
    if intent.status in ("requires_action", "requires_payment_method", "canceled"):
        # Off-session, nobody can authenticate: a failure (the customer may pay by hand).
        reason = "authentication_required" if intent.status == "requires_action" else intent.status
        return auto_topup_fail(purchase_id=purchase.pk, reason=reason, payment_intent_id=intent.id)
    purchase.refresh_from_db()
    return purchase


def auto_topup_fail(
    *,
    purchase_id: UUID,
    reason: str,
    payment_intent_id: str | None = None,
    count: bool = True,
) -> Purchase:
    """Fail a pending auto top-up (from the charge task)."""
    with transaction.atomic(durable=True):
        purchase = Purchase.objects.select_for_update().get(pk=purchase_id)
        failure_record(purchase, reason=reason, payment_intent_id=payment_intent_id, count=count)
        return purchase


def failure_record(
    purchase: Purchase, *, reason: str, payment_intent_id: str | None = None, count: bool = True
) -> None:
    """On a locked purchase, in the caller's transaction (the charge task, or the
    `payment_intent.payment_failed` handler): fail it once, count the failure, fire
    `auto_topup.failed`, and after `MAX_FAILURES` in a row turn auto top-up off. Only a pending
    purchase counts, so the create call's card error and the webhook about the same decline
    count once."""
    if purchase.status != PurchaseStatus.PENDING or purchase.lot_id is not None:
        return
    if payment_intent_id and not purchase.payment_intent_id:
        purchase.payment_intent_id = payment_intent_id
    purchase.status = PurchaseStatus.FAILED
    purchase.status_reason = f"{purchase.status_reason}\nAuto top-up failed: {reason}".strip()
    purchase.save()
    if not count:
        return
    ledger.account_open(user_id=purchase.user_id)
    locks.account_lock(purchase.user_id)  # lock order: purchase, account, auto top-up row
    config = AutoTopup.objects.select_for_update().filter(user_id=purchase.user_id).first()
    event_record(
        user_id=purchase.user_id,
        type=EventType.AUTO_TOPUP_FAILED,
        data={"purchase_id": str(purchase.pk), "reason": reason},
        cause=f"auto_topup.failed:{purchase.pk}",
    )
    if config is None:
        return
    config.failures += 1
    if config.failures >= MAX_FAILURES and config.enabled:
        config.enabled = False
        config.disabled_reason = AutoTopupDisabledReason.PAYMENT_FAILURES
        ledger.auto_topup_threshold_set(user_id=purchase.user_id, threshold=None)
    config.save()


def success_record(purchase: Purchase) -> None:
    """After the grant of an auto top-up (the handler, purchase and account locked): the run of
    failures ends and `auto_topup.succeeded` fires, once per purchase."""
    config = AutoTopup.objects.select_for_update().filter(user_id=purchase.user_id).first()
    if config is not None and config.failures:
        config.failures = 0
        config.save(update_fields=["failures", "updated_at"])
    event_record(
        user_id=purchase.user_id,
        type=EventType.AUTO_TOPUP_SUCCEEDED,
        data={"purchase_id": str(purchase.pk)},
        cause=f"auto_topup.succeeded:{purchase.pk}",
    )
