"""Notifications in the admin: events, deliveries (with "resend") and endpoints, read-only.

Secrets never appear: the endpoint page excludes `secret_encrypted`. Resending is a staff write,
recorded in the audit log (config/audit.py) with the delivery's state before and after.
"""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from config.admin_site import ReadOnlyModelAdmin
from config.audit import audit_record
from config.broker import publish_soon
from credits.models import Event

# tasks: imported so that every process loading the admin registers the delivery tasks.
from . import services, tasks
from .models import Delivery, DeliveryAttempt, WebhookEndpoint


@admin.register(Event)
class EventAdmin(ReadOnlyModelAdmin):
    list_display = ("public_id", "type", "user", "created_at", "dispatched_at")
    list_filter = ("type",)
    search_fields = ("user__email", "cause")
    readonly_fields = ("id", "user", "type", "data", "cause", "created_at", "dispatched_at")
    date_hierarchy = "created_at"


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("attempt", "status_code", "error", "created_at", "next_attempt_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "channel",
        "event",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
    )
    list_filter = ("channel", "status")
    search_fields = ("endpoint__url", "event__user__email")
    readonly_fields = (
        "event",
        "channel",
        "endpoint",
        "status",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "outbound_email_id",
    )
    inlines = [DeliveryAttemptInline]
    actions = ["resend"]

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("notifications.change_delivery"))

    @admin.action(description="Resend now (webhook deliveries)", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        resent = 0
        for delivery in queryset.filter(channel="webhook"):
            with transaction.atomic():
                if not services.delivery_resend(delivery_id=delivery.pk):
                    continue
                resent += 1
                audit_record(
                    instance=delivery,
                    action="update",
                    before={"status": delivery.status, "next_attempt_at": delivery.next_attempt_at},
                    after={"status": "pending", "next_attempt_at": "now (resend)"},
                )
                transaction.on_commit(_kick(delivery.pk), robust=True)
        self.message_user(request, f"Queued {resent} delivery(ies) again.", messages.SUCCESS)


def _kick(delivery_id: int) -> Callable[[], None]:
    return lambda: publish_soon(tasks.delivery_attempt_task, delivery_id)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyModelAdmin):
    list_display = ("url", "user", "enabled", "created_at", "failing_since", "disabled_reason")
    list_filter = ("enabled",)
    search_fields = ("url", "user__email")
    # Never the secret, not even encrypted.
    fields = (
        "id",
        "user",
        "url",
        "events",
        "enabled",
        "created_at",
        "failing_since",
        "disabled_at",
        "disabled_reason",
    )
    readonly_fields = fields
