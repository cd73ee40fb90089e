"""Forms of the admin console: the staff credit adjustment and the rate-limit tier form."""

import uuid
from datetime import datetime
from typing import Any

from django import forms
from django.contrib.admin import widgets

from . import clock
from .models import Tier
from .models.payments import Package

# The ledger's balances are 32-bit integers; one adjustment stays far below that.
MAX_ADJUSTMENT = 100_000_000


class FreezeForm(forms.Form):
    """Why staff freeze or unfreeze an account: required, kept on the account (a freeze) and in
    the user's admin history (both)."""

    reason = forms.CharField(
        max_length=200,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: recorded with your name in the user's history.",
    )


class AdjustCreditsForm(forms.Form):
    """A staff adjustment of one account, written through `credits.services.credits_adjust`.

    `form_id` is a fresh UUID in every rendered form and becomes the operation's idempotency key,
    so a double click or a re-posted page writes the adjustment once."""

    amount = forms.IntegerField(
        min_value=-MAX_ADJUSTMENT,
        max_value=MAX_ADJUSTMENT,
        help_text="Credits to add (positive) or remove (negative). "
        "Removing takes available credit only, soonest-expiring first.",
    )
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: shown in the ledger next to the entry and to the user.",
    )
    expires_at = forms.SplitDateTimeField(
        required=False,
        widget=widgets.AdminSplitDateTime,
        label="Expires at (UTC)",
        help_text="Positive adjustments only; empty: the credits never expire.",
    )
    form_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_amount(self) -> int:
        amount: int = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Enter a non-zero amount.")
        return amount

    def clean_reason(self) -> str:
        reason: str = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why the credits are adjusted.")
        return reason

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        amount = cleaned.get("amount")
        expires_at: datetime | None = cleaned.get("expires_at")
        if expires_at is not None:
            if amount is not None and amount < 0:
                self.add_error("expires_at", "Only added credits can expire; leave this empty.")
            elif expires_at <= clock.now():
                self.add_error("expires_at", "The expiry must be in the future.")
        return cleaned

    @property
    def idempotency_key(self) -> str:
        return f"admin-adjust:{self.cleaned_data['form_id']}"


class TierForm(forms.ModelForm):
    """The model's CHECK constraints and `Tier.clean` (no overlapping ranges) run through the
    ModelForm's `full_clean`; the field bounds here put the plain mistakes next to their field."""

    class Meta:
        model = Tier
        fields = (
            "name",
            "min_balance",
            "max_balance",
            "requests_per_minute",
            "requests_per_hour",
            "requests_per_day",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("min_balance", "requests_per_minute", "requests_per_hour", "requests_per_day"):
            self.fields[name].widget.attrs["min"] = 1
            self.fields[name].validators.append(_at_least_one)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        low, high = cleaned.get("min_balance"), cleaned.get("max_balance")
        if low is not None and high is not None and high < low:
            self.add_error("max_balance", "The upper bound must not be below the lower bound.")
        return cleaned


class PackageForm(forms.ModelForm):
    """Packages: the model's CHECK constraints (credits and price positive, currency lower-case
    ISO, validity positive) run through `full_clean`; an Enterprise package is sold to the
    customers named on it, so it needs at least one, and a public one names none."""

    class Meta:
        model = Package
        fields = (
            "slug",
            "name",
            "credits",
            "price_amount",
            "currency",
            "validity_months",
            "active",
            "enterprise",
            "customers",
        )

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


def _at_least_one(value: int) -> None:
    if value < 1:
        raise forms.ValidationError("Must be at least 1.")
