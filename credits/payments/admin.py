"""Admin for packages, purchases and Stripe events."""

import uuid
from typing import Any
from uuid import UUID

from auditlog.registry import auditlog
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from config.admin_site import ReadOnlyModelAdmin
from config.audit import audit_record
from config.money import money_format
from credits import services as ledger
from credits.models import CreditAccount
from credits.payments.models import (
    AutoTopup,
    Package,
    Purchase,
    StaffRefund,
    StripeCustomer,
    StripeEvent,
    StripeEventStatus,
)

# tasks: imported so that every process loading the admin (Celery workers too, through
# django.setup()) registers the Stripe event task.
from . import services, tasks  # noqa: F401
from .finance_admin import FinanceReportAdmin  # noqa: F401  (registers "Finance by month")
from .refunds import (
    RefundRefused,
    refund_preview,
    refundable_amount,
    staff_refund_request,
)

# A package's own fields: what the list shows and the form edits (with its customers).
PACKAGE_COLUMNS = (
    "slug",
    "name",
    "credits",
    "price_amount",
    "currency",
    "validity_months",
    "active",
    "enterprise",
)


class PackageForm(forms.ModelForm):
    """Packages: the model's CHECK constraints (credits and price positive, currency lower-case
    ISO, validity positive) run through `full_clean`; an Enterprise package is sold to the
    customers named on it, so it needs at least one, and a public one names none."""

    class Meta:
        model = Package
        fields = (*PACKAGE_COLUMNS, "customers")

    def clean_currency(self) -> str:
        currency: str = self.cleaned_data["currency"]
        return currency.strip().lower()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        customers = cleaned.get("customers")
        has_customers = customers is not None and len(customers) > 0
        if cleaned.get("enterprise") and not has_customers:
            self.add_error("customers", "Name at least one customer for an Enterprise package.")
        elif not cleaned.get("enterprise") and has_customers:
            self.add_error("customers", "Only Enterprise packages are limited to customers.")
        return cleaned


@admin.register(Package)
class PackageAdmin(admin.ModelAdmin):
    # The form's fields, with the price as money (`$29.99 USD`) in place of its two columns.
    list_display = tuple(
        "price" if name == "price_amount" else name
        for name in PACKAGE_COLUMNS
        if name != "currency"
    )
    list_filter = ("active", "enterprise")
    search_fields = ("slug", "name")
    form = PackageForm  # Enterprise packages name their customers; currency lower-cased
    autocomplete_fields = ("customers",)  # searched by email: a full list of users won't fit
    prepopulated_fields = {"slug": ("name",)}

    @admin.display(description="price", ordering="price_amount")
    def price(self, obj: Package) -> str:
        return money_format(obj.price_amount, obj.currency)


class StripeEventInline(admin.TabularInline):
    model = StripeEvent
    fields = ("event_id", "type", "status", "created", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Purchase | None = None) -> bool:
        return False


class ClawbackShortfallFilter(admin.SimpleListFilter):
    """Refunded or disputed purchases whose credits could not all be taken back."""

    title = "claw-back shortfall"
    parameter_name = "shortfall"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("owed", "still owed (held)"), ("uncollectable", "uncollectable (spent)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> QuerySet[Purchase]:
        if self.value() == "owed":
            return queryset.filter(lot__clawback_owed__gt=0)
        if self.value() == "uncollectable":
            return queryset.filter(lot__clawback_uncollectable__gt=0)
        return queryset


REFUND_PERMISSION = "payments.refund_purchase"
REFUND_URL_NAME = "payments_purchase_refund"


class RefundForm(forms.Form):
    """A staff refund. `refund_id` is a fresh UUID in every rendered form and becomes the
    refund's primary key, so a double click or a re-posted page refunds once."""

    amount = forms.IntegerField(
        min_value=1, help_text="In minor units of the purchase's currency (cents)."
    )
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: kept with the refund and sent to Stripe in its metadata.",
    )
    refund_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


class StaffRefundInline(admin.TabularInline):
    model = StaffRefund
    fields = ("created_at", "amount", "currency", "status", "reason", "created_by", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Purchase | None = None) -> bool:
        return False


def purchase_refund_view(
    model_admin: "PurchaseAdmin", request: HttpRequest, purchase_id: UUID
) -> HttpResponse:
    """The refund form: amount (default: all that is left), reason, and the preview of the
    credits it would claw back; "Preview" recomputes it for the amount typed, "Refund" sends."""
    if not request.user.has_perm(REFUND_PERMISSION):
        raise PermissionDenied
    purchase = get_object_or_404(Purchase.objects.select_related("user", "lot"), pk=purchase_id)
    change_url = reverse("admin:payments_purchase_change", args=[purchase.pk])
    refundable = refundable_amount(purchase=purchase)
    if request.method == "POST":
        form = RefundForm(request.POST)
    else:
        form = RefundForm(initial={"amount": refundable})
    amount = refundable
    if request.method == "POST":
        valid = form.is_valid()
        # "Preview" needs only the amount: the reason may still be empty.
        amount = form.cleaned_data.get("amount") or refundable
        if valid and "_refund" in request.POST:
            try:
                refund = staff_refund_request(
                    refund_id=form.cleaned_data["refund_id"],
                    purchase_id=purchase.pk,
                    amount=amount,
                    reason=form.cleaned_data["reason"],
                    staff=request.user,  # type: ignore[arg-type]
                )
            except RefundRefused as exc:
                form.add_error(exc.field or None, exc.message)
            else:
                model_admin.message_user(
                    request,
                    f"Refund of {refund.amount} {refund.currency} requested: it is sent to "
                    "Stripe now, and the credits are clawed back once Stripe confirms it.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(change_url)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Refund {purchase}",
        "opts": model_admin.opts,
        "original": purchase,
        "form": form,
        "preview": refund_preview(purchase=purchase, amount=min(amount, refundable)),
        "refundable": refundable,
        "change_url": change_url,
    }
    return TemplateResponse(request, "admin/payments/purchase/refund.html", context)


@admin.register(Purchase)
class PurchaseAdmin(admin.ModelAdmin):
    # Ten columns fit a 1,400-px screen with a long address (tests/admin/test_browser.py):
    # the purchase's id is on its page (and searchable), the clawback beside the refund, then
    # what a refund or dispute could not take back (owed, uncollectable).
    list_display = (
        "created_at",
        "user",
        "package",
        "status",
        "price",
        "refunded",
        "clawback_owed",
        "clawback_uncollectable",
        "dispute_status",
        "paid_at",
    )
    list_filter = ("status", "auto_topup", "dispute_status", "package", ClawbackShortfallFilter)
    search_fields = (
        "id",
        "user__email",
        "checkout_session_id",
        "payment_intent_id",
        "charge_id",
        "dispute_id",
    )
    list_select_related = ("user", "package", "lot")
    inlines = [StripeEventInline, StaffRefundInline]
    actions = ["unfreeze_buyers"]
    change_form_template = "admin/payments/purchase/change_form.html"
    # Purchases change only through Stripe events; staff may annotate the reason. Amounts are
    # shown as money (`$29.99 USD`), not as their minor-unit columns.
    exclude = ("price_amount", "currency", "amount_paid", "currency_paid", "amount_refunded")
    readonly_fields = (
        "id",
        "user",
        "package",
        "credits",
        "price",
        "validity_months",
        "status",
        "idempotency_key",
        "checkout_session_id",
        "checkout_url",
        "payment_intent_id",
        "charge_id",
        "dispute_id",
        "dispute_status",
        "paid",
        "paid_at",
        "lot",
        "refunded",
        "credits_clawed_back",
        "clawback_owed",
        "clawback_uncollectable",
        "created_at",
        "updated_at",
    )

    @admin.display(description="price", ordering="price_amount")
    def price(self, obj: Purchase) -> str:
        return money_format(obj.price_amount, obj.currency)

    @admin.display(description="paid")
    def paid(self, obj: Purchase) -> str:
        return money_format(obj.amount_paid, obj.currency_paid)

    @admin.display(description="refunded (credits clawed back)", ordering="amount_refunded")
    def refunded(self, obj: Purchase) -> str:
        return f"{money_format(obj.amount_refunded, obj.currency)} ({obj.credits_clawed_back:,})"

    @admin.display(description="claw-back owed")
    def clawback_owed(self, obj: Purchase) -> str:
        """Claimed by a refund or dispute but held by live requests: taken as they end."""
        return f"{obj.lot.clawback_owed if obj.lot else 0:,}"

    @admin.display(description="uncollectable")
    def clawback_uncollectable(self, obj: Purchase) -> str:
        """Claimed by a refund or dispute but spent (or expired) before it could be taken."""
        return f"{obj.lot.clawback_uncollectable if obj.lot else 0:,}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Purchase | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        def view(request: HttpRequest, purchase_id: UUID) -> HttpResponse:
            return purchase_refund_view(self, request, purchase_id)

        return [
            path(
                "<uuid:purchase_id>/refund/",
                self.admin_site.admin_view(view),
                name=REFUND_URL_NAME,
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if request.user.has_perm(REFUND_PERMISSION):
            extra_context["refund_url"] = reverse(f"admin:{REFUND_URL_NAME}", args=[object_id])
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(
        description="Unfreeze the buyers' accounts (after reviewing the dispute)",
        permissions=["change"],
    )
    def unfreeze_buyers(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        user_ids = set(queryset.values_list("user_id", flat=True))
        for user_id in user_ids:
            account = CreditAccount.objects.filter(pk=user_id).first()
            ledger.account_unfreeze(user_id=user_id)
            if account is not None and account.frozen_at is not None:
                audit_record(
                    instance=account,
                    action="update",
                    before={"frozen_at": account.frozen_at, "frozen_reason": account.frozen_reason},
                    after={"frozen_at": None, "frozen_reason": ""},
                )
        self.message_user(request, f"Unfroze {len(user_ids)} account(s).", messages.SUCCESS)


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "type", "status", "attempts", "purchase", "created", "received_at")
    list_filter = ("status", "type")
    search_fields = ("event_id", "type", "purchase__id")
    actions = ["reprocess"]
    readonly_fields = (
        "event_id",
        "type",
        "livemode",
        "api_version",
        "created",
        "payload",
        "status",
        "attempts",
        "error",
        "purchase",
        "received_at",
        "processed_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StripeEvent | None = None) -> bool:
        return False

    @admin.action(description="Reprocess failed (or unprocessed) events", permissions=["change"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        event_ids = list(
            queryset.filter(
                status__in=[StripeEventStatus.FAILED, StripeEventStatus.PENDING]
            ).values_list("event_id", flat=True)
        )
        results = services.stripe_events_reprocess(event_ids=event_ids)
        failed = [event_id for event_id, status in results.items() if status == "failed"]
        self.message_user(
            request,
            f"Reprocessed {len(results)} event(s); {len(failed)} failed again"
            + (f": {', '.join(failed)}" if failed else "."),
            messages.WARNING if failed else messages.SUCCESS,
        )


@admin.register(AutoTopup)
class AutoTopupAdmin(ReadOnlyModelAdmin):
    list_display = (
        "user",
        "enabled",
        "threshold",
        "package",
        "monthly_limit",
        "failures",
        "disabled_reason",
        "updated_at",
    )
    list_filter = ("enabled", "disabled_reason")
    search_fields = ("user__email",)
    list_select_related = ("user", "package")


@admin.register(StripeCustomer)
class StripeCustomerAdmin(ReadOnlyModelAdmin):
    list_display = ("user", "customer_id", "card_brand", "card_last4", "payment_method_saved_at")
    search_fields = ("user__email", "customer_id")
    list_select_related = ("user",)


# The audit log of staff writes (config/audit.py).
auditlog.register(Package, m2m_fields={"customers"})
auditlog.register(StaffRefund)
