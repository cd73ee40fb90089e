"""Credit packages, purchases and the Stripe events that pay, refund or dispute them.

Design, in one paragraph: a **package** is data staff edit (credits, a price in minor units with
its currency, a validity in calendar months or none); an Enterprise package is one restricted to
named users. A **purchase** snapshots the package's credits, price and validity when it is created,
so a later price change never refuses a genuine payment, and carries the Stripe ids that tie
events to it (Checkout Session, PaymentIntent, Charge, Dispute), each unique: that is how a
`checkout.session.completed` and a later `payment_intent.succeeded` for the same payment are known
to be one payment. Credits move only through `credits.services`; the purchase records which lot
its grant made (`lot`), and its grant is keyed `purchase:<id>`, so it happens once however often
and in whatever order the events arrive. A **Stripe event** is stored once per Stripe event id
(a UNIQUE constraint, not a lookup) after its signature was verified, and records whether it was
processed, ignored (a type we do not handle) or failed (with the error, for reprocessing).

Auto top-up (issue 19): a user's **Stripe customer** row is created once (its primary key is
the user; Stripe's idempotency key is derived from the user id) and keeps the card saved through
a Checkout Session in setup mode (ids and display fields only). The **auto top-up** row is the
user's configuration and its run of failures. An auto top-up is a purchase like any other
(`auto_topup=True`), made by a task when the ledger stamps the account (its balance crossed the
threshold) and paid off-session by a PaymentIntent; a partial unique index allows at most one
pending per user. See `credits.payments.autotopup`.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from credits.models import Lot


class PackageQuerySet(models.QuerySet["Package"]):
    def visible_to(self, user: object) -> "PackageQuerySet":
        """Active packages a user may see and buy: the public ones, plus the Enterprise ones
        made for them (anonymous users see the public ones only)."""
        visible = Q(enterprise=False)
        if getattr(user, "is_authenticated", False):
            visible |= Q(enterprise=True, customers=user)
        return self.filter(visible, active=True).distinct()


class Package(models.Model):
    slug = models.SlugField(max_length=64, unique=True, help_text="The id clients send.")
    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField()
    price_amount = models.PositiveIntegerField(help_text="In the currency's minor units (cents).")
    currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217, lower case.")
    validity_months = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Calendar months from payment; empty: never expires."
    )
    active = models.BooleanField(default=True, help_text="Inactive packages cannot be bought.")
    enterprise = models.BooleanField(
        default=False, help_text="Visible to and buyable by the chosen customers only."
    )
    customers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="enterprise_packages"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PackageQuerySet.as_manager()

    class Meta:
        db_table = "credits_package"
        ordering = ("price_amount", "slug")
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="package_credits_positive"),
            models.CheckConstraint(condition=Q(price_amount__gt=0), name="package_price_positive"),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[a-z]{3}$"), name="package_currency_lower_iso"
            ),
            models.CheckConstraint(
                condition=Q(validity_months__isnull=True) | Q(validity_months__gt=0),
                name="package_validity_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class PurchaseStatus(models.TextChoices):
    PENDING = "pending", "pending: checkout not completed"
    PAID = "paid", "paid: credits granted"
    PARTIALLY_REFUNDED = "partially_refunded", "partially refunded"
    REFUNDED = "refunded", "refunded in full"
    DISPUTED = "disputed", "disputed: account frozen"
    NEEDS_REVIEW = "needs_review", "needs review: payment disagrees, nothing granted"
    FAILED = "failed", "failed: the payment did not go through"
    EXPIRED = "expired", "expired: checkout abandoned"


class Purchase(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="purchases"
    )
    package = models.ForeignKey(Package, on_delete=models.PROTECT, related_name="purchases")
    # The snapshot the payment is checked against and the grant is made from.
    credits = models.PositiveIntegerField()
    price_amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    validity_months = models.PositiveSmallIntegerField(null=True, blank=True)

    status = models.CharField(
        max_length=24, choices=PurchaseStatus.choices, default=PurchaseStatus.PENDING
    )
    status_reason = models.TextField(blank=True, help_text="Why it needs review, or notes.")
    # The client's Idempotency-Key header: a retried POST finds this purchase again. NULL, not
    # "", when absent, so that the partial unique constraint below ignores keyless purchases.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001

    checkout_session_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    charge_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    dispute_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    dispute_status = models.CharField(max_length=32, blank=True)

    # Stripe's hosted receipt of the paying charge, recorded from the `charge.succeeded` (and
    # `charge.refunded`) events; the API shows it once the purchase is paid.
    receipt_url = models.URLField(max_length=2000, blank=True)
    amount_paid = models.PositiveIntegerField(null=True, blank=True)
    currency_paid = models.CharField(max_length=3, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True, help_text="The paying event's time.")
    lot = models.OneToOneField(
        Lot, on_delete=models.PROTECT, null=True, blank=True, related_name="purchase"
    )
    # Stripe's cumulative amount refunded on the charge (the highest seen: events may arrive
    # out of order). Recorded even before the grant, which then applies it.
    amount_refunded = models.PositiveIntegerField(default=0)
    credits_clawed_back = models.PositiveIntegerField(default=0)

    # Made by auto top-up (paid off-session by a PaymentIntent, no Checkout Session).
    auto_topup = models.BooleanField(default=False)

    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "credits_purchase"
        ordering = ("-created_at",)
        constraints = [
            # Two triggers racing (two settles crossing the threshold at once, a beat sweep and
            # a kick) can never both start a top-up: the second insert fails.
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(auto_topup=True, status="pending"),
                name="purchase_one_pending_auto_topup",
            ),
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="purchase_unique_client_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(credits__gt=0), name="purchase_credits_positive"),
            models.CheckConstraint(condition=Q(price_amount__gt=0), name="purchase_price_positive"),
            models.CheckConstraint(
                # Credits are granted only for a payment that matched the snapshot.
                condition=Q(lot__isnull=True) | Q(paid_at__isnull=False),
                name="purchase_granted_only_when_paid",
            ),
        ]
        indexes = [models.Index(fields=["user", "-created_at"], name="purchase_user_newest")]

    def __str__(self) -> str:
        return f"purchase {self.pk} ({self.package_id}, {self.status})"


class StripeEventStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored", "ignored: a type or object we do not handle"
    FAILED = "failed"


class StripeEvent(models.Model):
    """One verified Stripe webhook event, stored once (UNIQUE on Stripe's event id)."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    livemode = models.BooleanField(default=False)
    api_version = models.CharField(max_length=32, blank=True)
    created = models.DateTimeField(help_text="Stripe's `created` time of the event.")
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=StripeEventStatus.choices, default=StripeEventStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    purchase = models.ForeignKey(
        Purchase, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "credits_stripeevent"
        ordering = ("-received_at",)
        indexes = [
            models.Index(
                fields=["received_at"],
                name="stripe_event_unfinished",
                condition=Q(status__in=["pending", "failed"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} ({self.status})"


class FinanceReport(Purchase):
    """No table of its own: the admin's page of the monthly finance figures
    (`credits.payments.finance`), with its own view permission."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "finance by month"


class StaffRefundStatus(models.TextChoices):
    PENDING = "pending", "pending: to be sent to Stripe"
    SUCCEEDED = "succeeded", "succeeded: Stripe refunded it"
    FAILED = "failed", "failed: Stripe refused it"


class StaffRefund(models.Model):
    """A refund staff asked for in the admin, and its outbox row: written in the same transaction
    that checks it against what is left to refund, sent to Stripe by a task after commit (never
    inside the transaction), with the Stripe idempotency key `staff-refund-<id>` so a retried send
    refunds once. Its credits are clawed back when Stripe confirms it, by whichever of this
    refund's send and the `charge.refunded` event is applied first: both set the purchase's
    cumulative `amount_refunded` from Stripe's charge, and the claw-back is a claim stated as a
    total, so the second finds nothing more to claim."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="staff_refunds")
    amount = models.PositiveIntegerField(help_text="In the purchase currency's minor units.")
    currency = models.CharField(max_length=3)
    reason = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=StaffRefundStatus.choices, default=StaffRefundStatus.PENDING
    )
    stripe_refund_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "payments_staffrefund"
        ordering = ("-created_at",)
        permissions = [("refund_purchase", "Can refund a purchase through Stripe")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="staff_refund_amount_positive"),
            models.CheckConstraint(
                condition=Q(status="succeeded", stripe_refund_id__isnull=False)
                | ~Q(status="succeeded"),
                name="staff_refund_succeeded_has_stripe_id",
            ),
        ]

    def __str__(self) -> str:
        return f"refund of {self.amount} {self.currency} ({self.status})"

    @property
    def stripe_idempotency_key(self) -> str:
        return f"staff-refund-{self.pk}"


class StripeCustomer(models.Model):
    """A user's Stripe Customer, created once, and the card saved on it for auto top-ups. Only
    Stripe's ids and the card's display fields are stored, never a card number."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        primary_key=True,
        related_name="stripe_customer",
    )
    customer_id = models.CharField(max_length=255, unique=True)
    payment_method_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    card_brand = models.CharField(max_length=32, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    card_exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    card_exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    # The last completed Checkout Session (setup mode): its redelivery changes nothing. Its
    # SetupIntent is `pending_setup_intent_id` until a task (after the webhook's commit, never
    # inside it) has read the card from Stripe and stored it; removing the card clears it.
    setup_session_id = models.CharField(max_length=255, blank=True)
    pending_setup_intent_id = models.CharField(max_length=255, blank=True)
    payment_method_saved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "payments_stripecustomer"

    def __str__(self) -> str:
        return f"Stripe customer {self.customer_id}"


class AutoTopupDisabledReason(models.TextChoices):
    PAYMENT_FAILURES = "payment_failures", "3 charges in a row failed"
    PAYMENT_METHOD_REMOVED = "payment_method_removed", "the saved card was removed"


class AutoTopup(models.Model):
    """A user's auto top-up configuration. While `enabled`, the ledger account carries the
    threshold (`CreditAccount.auto_topup_threshold`, kept in step by the service)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    enabled = models.BooleanField(default=False)
    threshold = models.BigIntegerField(null=True, blank=True)
    package = models.ForeignKey(
        Package, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    monthly_limit = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Most auto top-ups may charge per UTC month (minor units)."
    )
    failures = models.PositiveSmallIntegerField(default=0, help_text="Failed charges in a row.")
    disabled_reason = models.CharField(
        max_length=32, blank=True, choices=AutoTopupDisabledReason.choices
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "payments_autotopup"
        constraints = [
            models.CheckConstraint(
                condition=Q(threshold__isnull=True) | Q(threshold__gte=1),
                name="auto_topup_threshold_positive",
            ),
            models.CheckConstraint(
                condition=Q(enabled=False)
                | Q(threshold__isnull=False, package__isnull=False, monthly_limit__isnull=False),
                name="auto_topup_enabled_is_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"auto top-up of {self.user_id} ({'on' if self.enabled else 'off'})"
