"""Admin console for users, API keys and service tokens.

Digests are never shown. Keys are created by their users and service tokens by
`manage.py create_service_token` (the only place a secret can be shown once), so neither has an
add form here; both can be revoked with an action.
"""

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from knox.models import AuthToken

from .models import ApiKey, OutboundEmail, ServiceToken, User
from .service_tokens import clear_cache
from .services import (
    email_mark_verified,
    email_verification_resend,
    user_anonymise,
    user_deactivate,
)
from .signals import user_registered

# knox registers an admin for login tokens that lets staff mint a token for any user, shown in
# clear (and carried in the messages cookie). A secret is shown once, to its owner; staff end a
# user's sessions by deactivating the user instead.
if admin.site.is_registered(AuthToken):
    admin.site.unregister(AuthToken)


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class VerifiedFilter(admin.SimpleListFilter):
    title = "email verified"
    parameter_name = "verified"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in ("yes", "no"):
            return queryset.filter(email_verified_at__isnull=self.value() == "no")
        return queryset


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    ordering = ("email",)
    list_display = (
        "email",
        "invite_code",
        "email_verified",
        "is_staff",
        "is_active",
        "date_joined",
    )
    list_filter = (
        VerifiedFilter,
        "is_staff",
        "is_active",
        "is_superuser",
        ("deleted_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("email", "invite_code")
    readonly_fields = (
        "id",
        "date_joined",
        "last_login",
        "email_verified_at",
        "signup_confirmed_at",
        "pending_email",
        "deleted_at",
    )
    # No "Delete": the ledger, usage and purchases name the user. Staff deactivate (reversible)
    # or anonymise (the account deletion users do themselves, `user_anonymise`).
    actions = ("verify_email", "resend_verification", "deactivate", "anonymise")
    fieldsets = (
        (None, {"fields": ("id", "email", "password", "invite_code")}),
        (
            "Verification",
            {"fields": ("email_verified_at", "signup_confirmed_at", "pending_email", "deleted_at")},
        ),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("date_joined", "last_login")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )

    @admin.display(boolean=True, description="verified", ordering="email_verified_at")
    def email_verified(self, obj: User) -> bool:
        return obj.email_verified

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _each(
        self,
        request: HttpRequest,
        users: QuerySet[User],
        service: Callable[..., object],
        done: str,
    ) -> None:
        """Run one account service per selected user (each its own transaction)."""
        chosen = list(users)
        for user in chosen:
            service(user=user)
        self.message_user(request, done.format(n=len(chosen)), messages.SUCCESS)

    @admin.action(description="Verify the email of selected users", permissions=["change"])
    def verify_email(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        unverified = queryset.filter(email_verified_at__isnull=True, deleted_at__isnull=True)
        self._each(request, unverified, email_mark_verified, "Verified {n} address(es).")

    @admin.action(description="Resend the verification email", permissions=["change"])
    def resend_verification(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        unverified = queryset.filter(email_verified_at__isnull=True, deleted_at__isnull=True)
        self._each(
            request, unverified, email_verification_resend, "Sent {n} verification email(s)."
        )

    @admin.action(description="Deactivate selected users (no login)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        active = queryset.filter(is_active=True)
        self._each(request, active, user_deactivate, "Deactivated {n} user(s).")

    @admin.action(
        description="Anonymise selected users (delete the account; the books are kept)",
        permissions=["change"],
    )
    def anonymise(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # Not oneself: a staff member who clicks through would lock themselves out.
        others = queryset.filter(deleted_at__isnull=True).exclude(pk=str(request.user.pk))
        self._each(
            request,
            others,
            user_anonymise,
            "Anonymised {n} account(s): keys revoked, balance forfeited, personal data replaced.",
        )

    def save_model(
        self, request: HttpRequest, obj: Any, form: "forms.ModelForm[Any]", change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A user added here starts like a registered one whose address staff vouch for
        # (credit account, verified, signup grant), in one transaction with the user row.
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            user_registered.send(sender=User, user=obj, invite_code="")
            email_mark_verified(user=obj)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user",)
    search_fields = ("user__email", "prefix", "name")
    fields = (
        "id",
        "user",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = (
        "id",
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # usage history names keys: revoke instead

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix")
    fields = ("name", "prefix", "created_at", "revoked_at")
    readonly_fields = ("name", "prefix", "created_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # `manage.py create_service_token NAME`: the secret is shown there once

    def has_delete_permission(self, request: HttpRequest, obj: ServiceToken | None = None) -> bool:
        return False

    @admin.action(description="Revoke selected service tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ServiceToken]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        # This process forgets at once; other workers within service_tokens.CACHE_SECONDS.
        clear_cache()
        self.message_user(
            request,
            f"Revoked {count} service token(s); every worker refuses them within seconds.",
            messages.SUCCESS,
        )


@admin.register(OutboundEmail)
class OutboundEmailAdmin(admin.ModelAdmin):
    """The mail outbox, read-only: what was sent, what waits, what failed and why."""

    list_display = ("to", "subject", "template", "status", "attempts", "created_at", "sent_at")
    list_filter = ("status", "template")
    search_fields = ("to",)
    fields = (
        "to",
        "subject",
        "template",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
        "sent_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
