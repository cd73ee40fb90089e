"""Admin console for users, API keys and service tokens.

The user page is accounts' own, assembled with the **panels** other apps register
(`user_panel_register`, from their own admin modules): accounts imports no app of ours, so the
credits, referrals, ... sections of the page come to it instead of each app subclassing the
user admin of the one before. A user added here is created by `accounts.services.user_create`,
as a registration creates one.

Digests are never shown. Keys are created by their users and service tokens by
`manage.py create_service_token` (the only place a secret can be shown once), so neither has an
add form here; both can be revoked with an action.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditlog.admin import LogEntryAdmin as AuditlogLogEntryAdmin
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern
from django.utils import timezone
from knox.models import AuthToken

from config.audit import audit_record

from . import budgets
from .models import ApiKey, OutboundEmail, ServiceToken, User
from .service_tokens import clear_cache
from .services import (
    email_mark_verified,
    email_verification_resend,
    user_anonymise,
    user_create,
    user_deactivate,
)
from .signals import api_key_revoked

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


@dataclass(frozen=True)
class UserPanel:
    """A part of the admin's user page that another app contributes.

    `fields` are read-only displays (functions of the user, decorated with `@admin.display`),
    shown in a section of their own titled `title` (above the user's own fields when `first`,
    else right after them), or with the user's own fields when `title` is None.
    `list_display` adds columns to the user list (`list_select_related` the relations they
    read); `urls` adds views under the user admin; `object_tools` gives the links shown above a
    user's page, as `(element id, label, url)`."""

    name: str
    title: str | None = None
    fields: tuple[Callable[[User], Any], ...] = ()
    list_display: tuple[Callable[[User], Any], ...] = ()
    list_select_related: tuple[str, ...] = ()
    urls: "Callable[[admin.ModelAdmin[User]], list[URLPattern]] | None" = None
    object_tools: Callable[[HttpRequest, str], list[tuple[str, str, str]]] | None = None
    first: bool = False


_PANELS: dict[str, UserPanel] = {}


def user_panel_register(panel: UserPanel) -> None:
    """Add (or replace, by name) a panel of the user page, in the order registered."""
    _PANELS[panel.name] = panel


class ApiKeyInline(admin.TabularInline):
    """The user's keys, read-only (revoking is an action on the key's own page)."""

    model = ApiKey
    fields = ("name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    ordering = ("-created_at",)
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "API keys (open one to revoke it)"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


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
    inlines = (ApiKeyInline,)
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

    # --- the panels ---------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Fieldsets name their fields; a panel's display functions are found here by name.
        for panel in _PANELS.values():
            for display in (*panel.fields, *panel.list_display):
                if display.__name__ == name:
                    return display
        raise AttributeError(name)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return super().get_fieldsets(request, obj)
        own, *rest = self.fieldsets
        joined = [d.__name__ for p in _PANELS.values() if p.title is None for d in p.fields]
        sections = [
            (panel, (panel.title, {"fields": tuple(d.__name__ for d in panel.fields)}))
            for panel in _PANELS.values()
            if panel.title is not None and panel.fields
        ]
        # The panels' sections right after who the user is (what staff open the page for), or
        # above it for the few a panel puts first.
        return [
            *(section for panel, section in sections if panel.first),
            (own[0], {**own[1], "fields": (*own[1]["fields"], *joined)}),
            *(section for panel, section in sections if not panel.first),
            *rest,
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        names = [d.__name__ for panel in _PANELS.values() for d in panel.fields]
        return (*super().get_readonly_fields(request, obj), *names)

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = [d for panel in _PANELS.values() for d in panel.list_display]
        return (*super().get_list_display(request), *columns)

    def get_list_select_related(self, request: HttpRequest) -> Any:
        return tuple(name for panel in _PANELS.values() for name in panel.list_select_related)

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None else ()  # a new user has no keys to show

    def get_urls(self) -> list[URLPattern]:
        # Before the catch-all "<path:object_id>/" of the admin's own URLs.
        extra = [url for p in _PANELS.values() if p.urls is not None for url in p.urls(self)]
        return extra + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        tools = [
            tool
            for panel in _PANELS.values()
            if panel.object_tools is not None
            for tool in panel.object_tools(request, object_id)
        ]
        extra_context = {**(extra_context or {}), "panel_tools": tools}
        return super().change_view(request, object_id, form_url, extra_context)

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
            user_create(user=obj)
            email_mark_verified(user=obj)


_SPEND_FIELDS = (
    "budget",
    "spent",
    "held",
    "allowed_models",
    "rotated_at",
    "previous_expires_at",
)


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
        "budget",
        "spent",
        "previous_expires_at",
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
        *_SPEND_FIELDS,
    )
    readonly_fields = (
        "id",
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        *_SPEND_FIELDS,
    )

    # Spend controls and rotation (issue 18), shown, not edited here: the user sets them
    # (PATCH /api/user/keys/{id}, rotate), and the counters belong to the ledger.
    @admin.display(description="budget")
    def budget(self, obj: ApiKey) -> str:
        if obj.budget_credits is None:
            return "none"
        return f"{obj.budget_credits:,} credits per {obj.budget_period}"

    @admin.display(description="spent in period")
    def spent(self, obj: ApiKey) -> str:
        spent = budgets.key_spent(obj, timezone.now())
        end = budgets.period_end(obj.budget_period, timezone.now())
        return f"{spent:,}" + (f" (resets {end:%Y-%m-%d %H:%M} UTC)" if end else "")

    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # usage history names keys: revoke instead

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = _revoke_audited(queryset)
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
        count = _revoke_audited(queryset)
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


def _revoke_audited(queryset: QuerySet[Any]) -> int:
    """Revoke the live ones (a conditional update: a concurrent revocation is not overwritten)
    and record each in the audit log with its before and after."""
    now = timezone.now()
    count = 0
    for obj in queryset.filter(revoked_at__isnull=True):
        # One transaction per key: its audit entry and its `key.revoked` event (written by the
        # ledger's receiver of `api_key_revoked`) commit with the revocation.
        with transaction.atomic():
            if (
                not type(obj)
                .objects.filter(pk=obj.pk, revoked_at__isnull=True)
                .update(revoked_at=now)
            ):
                continue
            count += 1
            audit_record(
                instance=obj,
                action="update",
                before={"revoked_at": None},
                after={"revoked_at": now},
            )
            if isinstance(obj, ApiKey):
                obj.revoked_at = now
                api_key_revoked.send(sender=ApiKey, key=obj)
    return count


# The audit log (config/audit.py): staff edits of a user's access and state. Never their
# password or last login; nor their email's values, which an append-only log would keep after
# the account is anonymised (the entry's object_repr still names the user of the time).
auditlog.register(
    User,
    include_fields=[
        "is_active",
        "is_staff",
        "is_superuser",
        "email_verified_at",
        "deleted_at",
    ],
    m2m_fields={"groups", "user_permissions"},
)


class AuditLogEntryAdmin(AuditlogLogEntryAdmin):
    """Readable by staff with `auditlog.view_logentry`, changed by nobody: the admin offers no
    delete (auditlog's own admin would, to superusers) and the database refuses it anyway."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


if admin.site.is_registered(LogEntry):
    admin.site.unregister(LogEntry)
admin.site.register(LogEntry, AuditLogEntryAdmin)
