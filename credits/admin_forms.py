"""Forms of the ledger's admin: the staff credit adjustment."""

import uuid
from datetime import datetime
from typing import Any

from django import forms
from django.contrib.admin import widgets

from . import clock

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
