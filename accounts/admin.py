"""Admin console for users, API keys and service tokens.

Digests are never shown. Keys are created by their users and service tokens by
`manage.py create_service_token` (the only place a secret can be shown once), so neither has an
add form here; both can be revoked with an action.
"""

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

from .models import ApiKey, ServiceToken, User
from .service_tokens import clear_cache
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


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    ordering = ("email",)
    list_display = ("email", "invite_code", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_active", "is_superuser")
    search_fields = ("email", "invite_code")
    readonly_fields = ("id", "date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("id", "email", "password", "invite_code")}),
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

    def save_model(
        self, request: HttpRequest, obj: Any, form: "forms.ModelForm[Any]", change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A user added here starts like a registered one (credit account, signup grant), in
        # one transaction with the user row.
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            user_registered.send(sender=User, user=obj, invite_code="")


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
