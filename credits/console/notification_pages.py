"""The notification settings: the low-balance threshold and which event types are emailed, the
webhook endpoints (add with the secret shown once, delete, send a test event) and each
endpoint's delivery log. Each form is validated by the notifications API's own serializer and
parser and saved through the same service as `/api/user/notifications` and
`/api/user/webhooks`."""

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from config.errors import ApplicationError, NotFound
from credits.models import EventType
from credits.notifications import services as notifications
from credits.notifications.models import MAX_ENDPOINTS_PER_USER, WebhookEndpoint
from credits.notifications.serializers import (
    NotificationSettingsSerializer,
    WebhookCreateInputSerializer,
    notification_settings_parse,
)

from .common import console_user, login_required, not_found, page, validated

DELIVERIES_PAGE = 50

# What each event type means, for the switches and the endpoint form.
TYPE_LABELS: dict[str, str] = {
    EventType.CREDITS_LOW: "Balance fell below the threshold",
    EventType.CREDITS_EXPIRING: "Credits expire within 7 days, and again within 24 hours",
    EventType.CREDITS_EXPIRED: "Credits expired",
    EventType.PAYMENT_SUCCEEDED: "Payment received",
    EventType.PAYMENT_REFUNDED: "Payment refunded",
    EventType.ACCOUNT_FROZEN: "Account frozen",
    EventType.KEY_CREATED: "API key created",
    EventType.KEY_REVOKED: "API key revoked",
    EventType.KEY_ROTATED: "API key rotated",
    EventType.KEY_EXPIRING: "API key expires within 7 days",
    EventType.AUTO_TOPUP_SUCCEEDED: "Auto top-up succeeded",
    EventType.AUTO_TOPUP_FAILED: "Auto top-up failed",
    EventType.AUTO_TOPUP_LIMIT_REACHED: "Auto top-up reached its monthly limit",
    EventType.WEBHOOK_TEST: "Test event",
}


def _notifications_page(
    request: HttpRequest,
    *,
    secret: dict[str, Any] | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    user = console_user(request)
    current = notifications.notification_settings(user_id=user.pk)
    posted = request.POST if request.method == "POST" and errors else None
    endpoints = WebhookEndpoint.objects.filter(user=user).order_by("-created_at")
    context = {
        "threshold": current["low_balance_threshold"],
        "switches": [
            (event_type, TYPE_LABELS.get(event_type, event_type), enabled)
            for event_type, enabled in current["email"].items()
        ],
        # `webhook.test` is sent to the one endpoint it is for, whatever that endpoint's types.
        "event_types": [(t, TYPE_LABELS.get(t, t)) for t in notifications.EMAIL_TYPES],
        "endpoints": endpoints,
        "max_endpoints": MAX_ENDPOINTS_PER_USER,
        "secret": secret,
        "errors": errors or {},
        # A refused form keeps what was typed (never the secret: it exists only on success).
        "form": posted or {},
        "form_events": posted.getlist("events") if posted is not None else [],
    }
    return page(
        request,
        "console/notifications.html",
        context,
        active="notifications",
        status=status,
        no_store=secret is not None,
    )


@login_required
@require_GET
def notifications_page(request: HttpRequest) -> HttpResponse:
    return _notifications_page(request)


@login_required
@require_POST
def notification_settings_action(request: HttpRequest) -> HttpResponse:
    """The threshold (empty: off; `1,000` is read as 1000) and one switch per mailable type
    (an unticked checkbox is absent from the form: off)."""
    user = console_user(request)
    raw = request.POST.get("low_balance_threshold", "").replace(",", "").strip()
    ticked = set(request.POST.getlist("email"))
    body = {
        "low_balance_threshold": raw or None,
        "email": {t: t in ticked for t in notifications.EMAIL_TYPES},
    }
    data, errors = validated(NotificationSettingsSerializer, body)
    if data is None:
        return _notifications_page(request, errors={"settings": errors}, status=400)
    try:
        parsed = notification_settings_parse(data)
    except ApplicationError as exc:
        return _notifications_page(
            request, errors={"settings": {exc.field or "form": exc.message}}, status=400
        )
    notifications.notification_settings_update(user_id=user.pk, **parsed)
    threshold = data["low_balance_threshold"]
    messages.success(
        request,
        "Notification settings saved; low-balance notices are off."
        if threshold is None
        else f"Notification settings saved; you are told when the balance falls below "
        f"{threshold:,} credits.",
    )
    return redirect("/my-credits/notifications")


@login_required
@require_POST
def webhook_create_action(request: HttpRequest) -> HttpResponse:
    """No event type ticked: every type (the API's `events` omitted)."""
    body: dict[str, Any] = {"url": request.POST.get("url", "").strip()}
    if events := request.POST.getlist("events"):
        body["events"] = events
    data, errors = validated(WebhookCreateInputSerializer, body)
    if data is None:
        return _notifications_page(request, errors={"webhook": errors}, status=400)
    try:
        endpoint, secret = notifications.webhook_endpoint_create(
            user=console_user(request), url=data["url"], events=data.get("events")
        )
    except ApplicationError as exc:
        # `too_many_webhooks` names no field: it is shown by the URL, where the user acts. The
        # API's "url: " prefix says which field; next to the field it goes without saying.
        field = exc.field or "url"
        message = exc.message.removeprefix(f"{field}: ")
        return _notifications_page(
            request,
            errors={"webhook": {field: message[:1].upper() + message[1:]}},
            status=exc.status_code,
        )
    return _notifications_page(
        request, secret={"url": endpoint.url, "secret": secret, "id": endpoint.pk}, status=201
    )


@login_required
@require_POST
def webhook_delete_action(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    try:
        endpoint = notifications.webhook_endpoint_get(
            user=console_user(request), endpoint_id=endpoint_id
        )
        notifications.webhook_endpoint_delete(user=console_user(request), endpoint_id=endpoint_id)
    except NotFound as exc:
        return not_found(request, exc.message, active="notifications")
    messages.success(request, f"Deleted the endpoint {endpoint.url}: nothing more is sent to it.")
    return redirect("/my-credits/notifications")


@login_required
@require_POST
def webhook_test_action(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    try:
        event = notifications.webhook_endpoint_test(
            user=console_user(request), endpoint_id=endpoint_id
        )
    except NotFound as exc:
        return not_found(request, exc.message, active="notifications")
    messages.success(
        request, f"Test event {event.public_id} queued: its attempts appear below when sent."
    )
    return redirect(f"/my-credits/webhooks/{endpoint_id}")


@login_required
@require_GET
def webhook_page(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    """The endpoint and its delivery log, newest first, `?before=<attempt id>` for older ones
    (the rows are the user's own endpoint's whatever the number: no need to sign it)."""
    user = console_user(request)
    raw_before = request.GET.get("before", "")
    # At most 18 digits: a bigint; a longer number would be a database error, not an answer.
    before = int(raw_before) if raw_before.isdigit() and len(raw_before) <= 18 else None
    try:
        endpoint = notifications.webhook_endpoint_get(user=user, endpoint_id=endpoint_id)
        rows = notifications.delivery_rows(
            user=user, endpoint_id=endpoint_id, before=before, limit=DELIVERIES_PAGE
        )
    except NotFound as exc:
        return not_found(request, exc.message, active="notifications")
    attempts = rows[:DELIVERIES_PAGE]
    context = {
        "endpoint": endpoint,
        "attempts": attempts,
        "older": f"?before={attempts[-1].pk}" if len(rows) > DELIVERIES_PAGE else None,
        "labels": TYPE_LABELS,
    }
    return page(request, "console/webhook.html", context, active="notifications")
