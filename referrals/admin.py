"""Admin console for the referral programme.

The programme row (amounts, daily cap, on/off switch) is edited here. Referrals are read-only:
they are written by registration and payments, and the ledger entries they name are the money
trail, so neither adding, editing nor deleting one by hand is offered.
"""

from auditlog.registry import auditlog
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.admin import UserPanel, user_panel_register
from accounts.models import User

from .models import Referral, ReferralProgram


@admin.register(ReferralProgram)
class ReferralProgramAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "enabled",
        "registration_reward",
        "payment_reward",
        "max_registration_rewards_per_day",
        "updated_at",
    )
    fields = (
        "enabled",
        "registration_reward",
        "payment_reward",
        "max_registration_rewards_per_day",
        "updated_at",
    )
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not ReferralProgram.objects.exists()  # one row, seeded by the migration

    def has_delete_permission(
        self, request: HttpRequest, obj: ReferralProgram | None = None
    ) -> bool:
        return False


@admin.register(Referral)
class ReferralAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "inviter",
        "invitee",
        "registration_status",
        "registration_credits",
        "payment_status",
        "payment_credits",
        "clawed_back",
    )
    list_filter = ("registration_status", "payment_status", "created_at")
    list_select_related = (
        "inviter",
        "invitee",
        "registration_entry",
        "payment_entry",
        "clawback_entry",
    )
    search_fields = ("inviter__email", "invitee__email", "inviter__invite_code")
    date_hierarchy = "created_at"
    fields = (
        "inviter",
        "invitee",
        "created_at",
        "registration_status",
        "registration_entry",
        "payment_status",
        "paid_purchase",
        "paid_at",
        "payment_entry",
        "reversed_at",
        "reversal_cause",
        "clawback_entry",
    )
    readonly_fields = fields

    @admin.display(description="registration reward")
    def registration_credits(self, obj: Referral) -> int:
        return obj.registration_entry.amount if obj.registration_entry else 0

    @admin.display(description="payment reward")
    def payment_credits(self, obj: Referral) -> int:
        return obj.payment_entry.amount if obj.payment_entry else 0

    @admin.display(description="clawed back")
    def clawed_back(self, obj: Referral) -> int:
        return -obj.clawback_entry.amount if obj.clawback_entry else 0

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Referral | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Referral | None = None) -> bool:
        return False


# --- the referrals panel of the user page (accounts.admin.user_panel_register) --------------


@admin.display(description="invited by")
def invited_by(obj: User) -> SafeString | str:
    referral = Referral.objects.select_related("inviter").filter(invitee=obj).first()
    if referral is None:
        return "\u2013"
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:accounts_user_change", args=[referral.inviter_id]),
        referral.inviter.email,
    )


@admin.display(description="referrals made")
def referrals_made(obj: User) -> SafeString:
    count = Referral.objects.filter(inviter=obj).count()
    return format_html(
        '<a href="{}?inviter={}">{} referral{}</a>',
        reverse("admin:referrals_referral_changelist"),
        obj.pk,
        count,
        "" if count == 1 else "s",
    )


# With who the user is: who invited them and whom they invited.
user_panel_register(UserPanel(name="referrals", fields=(invited_by, referrals_made)))


auditlog.register(ReferralProgram)  # the audit log of staff writes (config/audit.py)
