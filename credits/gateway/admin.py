"""Admin of the gateway: the rate-limit tiers, validated by the model's constraints and
`Tier.clean` (no overlapping ranges); every save clears the tier cache of this process."""

from typing import Any

from auditlog.registry import auditlog
from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Tier
from .ratelimit import tiers_cache_clear

# What staff edit of a tier, and see of every tier in the list.
TIER_FIELDS = (
    "name",
    "min_balance",
    "max_balance",
    "requests_per_minute",
    "requests_per_hour",
    "requests_per_day",
)


class TierForm(forms.ModelForm):
    """The model's CHECK constraints and `Tier.clean` (no overlapping ranges) run through the
    ModelForm's `full_clean`; the field bounds here put the plain mistakes next to their field."""

    class Meta:
        model = Tier
        fields = TIER_FIELDS

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


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    form = TierForm
    list_display = TIER_FIELDS
    ordering = ("min_balance",)

    def save_model(self, request: HttpRequest, obj: Tier, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # This process forgets at once; other workers within ratelimit.TIER_CACHE_SECONDS.
        tiers_cache_clear()

    def delete_model(self, request: HttpRequest, obj: Tier) -> None:
        super().delete_model(request, obj)
        tiers_cache_clear()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tier]) -> None:
        super().delete_queryset(request, queryset)
        tiers_cache_clear()


def _at_least_one(value: int) -> None:
    if value < 1:
        raise forms.ValidationError("Must be at least 1.")


auditlog.register(Tier)  # the audit log of staff writes (config/audit.py)
