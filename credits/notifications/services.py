"""Notifications: the user's settings, webhook endpoints, and delivering the outbox's events.

Fan-out (`event_dispatch`): the event row is taken with `FOR UPDATE SKIP LOCKED` and only while
`dispatched_at` is NULL, so of two dispatchers (the after-commit task and the sweep, or two
sweeps) exactly one writes its delivery rows and stamps it; the other skips it at once rather
than waiting. The unique constraints on deliveries are the backstop. The email channel is
handed to the mail outbox in that same transaction (one message per event, ever).

A webhook attempt (`delivery_attempt`) claims its row with a conditional update, does the slow
HTTP outside any transaction (no lock is held while a receiver thinks), then records the
outcome with a conditional update that only the claimant's attempt number matches.
"""

import json
import logging
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from standardwebhooks.webhooks import Webhook

from accounts.mail import email_enqueue
from accounts.models import User
from config.errors import ApplicationError, NotFound
from config.observability import count_event_dispatched, count_notification_delivery
from credits import clock
from credits.events import event_record
from credits.models import CreditAccount, Event, EventType
from credits.services import low_balance_threshold_set

from . import outbound
from .models import (
    DISABLE_AFTER,
    JITTER,
    MAX_ENDPOINTS_PER_USER,
    RETRY_DELAYS,
    Channel,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EmailPreference,
    WebhookEndpoint,
)
from .secrets import secret_decrypt, secret_encrypt, secret_new

logger = logging.getLogger(__name__)

# How long a sender owns a claimed delivery: well past the 10 s total timeout of a POST.
LEASE = timedelta(minutes=2)

# Every type a user can be mailed about (the test event goes to its endpoint only).
EMAIL_TYPES = tuple(t for t in EventType.values if t != EventType.WEBHOOK_TEST)

SUBJECTS: dict[str, str] = {
    EventType.CREDITS_LOW: "Your credit balance is running low",
    EventType.CREDITS_EXPIRING: "Some of your credits expire soon",
    EventType.CREDITS_EXPIRED: "Some of your credits have expired",
    EventType.PAYMENT_SUCCEEDED: "Payment received: your credits are ready",
    EventType.PAYMENT_REFUNDED: "Your payment was refunded",
    EventType.ACCOUNT_FROZEN: "Your account has been frozen",
    EventType.KEY_CREATED: "A new API key was created",
    EventType.KEY_REVOKED: "An API key was revoked",
    EventType.KEY_ROTATED: "An API key was rotated",
    EventType.KEY_EXPIRING: "An API key expires soon",
    EventType.AUTO_TOPUP_SUCCEEDED: "Auto top-up succeeded",
    EventType.AUTO_TOPUP_FAILED: "Auto top-up failed",
    EventType.AUTO_TOPUP_LIMIT_REACHED: "Auto top-up reached its monthly limit",
}

# --- settings -------------------------------------------------------------------------------


def email_preferences(*, user_id: UUID) -> dict[str, bool]:
    """Every mailable type with the user's choice (on unless turned off)."""
    chosen = dict(EmailPreference.objects.filter(user_id=user_id).values_list("type", "enabled"))
    return {t: chosen.get(t, True) for t in EMAIL_TYPES}


def notification_settings_update(
    *,
    user_id: UUID,
    email: dict[str, bool],
    threshold_given: bool = False,
    threshold: int | None = None,
) -> None:
    """Store the email choices and (when given) the low-balance threshold, all or nothing."""
    with transaction.atomic():
        for event_type, enabled in email.items():
            EmailPreference.objects.update_or_create(
                user_id=user_id, type=event_type, defaults={"enabled": enabled}
            )
        if threshold_given:
            low_balance_threshold_set(user_id=user_id, threshold=threshold)


# --- endpoints ------------------------------------------------------------------------------


def webhook_url_check(url: str) -> None:
    try:
        outbound.target_resolve(url)
    except outbound.BlockedAddress as exc:
        raise ApplicationError(f"url: {exc}.", code="invalid_webhook_url", field="url") from None


def webhook_endpoint_create(
    *, user: User, url: str, events: list[str] | None
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (returned once, stored encrypted)."""
    webhook_url_check(url)  # DNS: before the transaction, which it would otherwise hold open
    secret = secret_new()
    with transaction.atomic():
        # The user's row serializes concurrent creations, so the limit holds under races
        # (lock order: the cause's row first, credits/locks.py).
        User.objects.select_for_update().filter(pk=user.pk).first()
        if WebhookEndpoint.objects.filter(user=user).count() >= MAX_ENDPOINTS_PER_USER:
            raise ApplicationError(
                f"At most {MAX_ENDPOINTS_PER_USER} webhook endpoints per user; delete one first.",
                code="too_many_webhooks",
            )
        endpoint = WebhookEndpoint.objects.create(
            user=user,
            url=url,
            events=sorted(set(events)) if events is not None else None,
            created_at=clock.now(),
            secret_encrypted=secret_encrypt(secret),
        )
    return endpoint, secret


def _own_endpoint(user: User, endpoint_id: str) -> WebhookEndpoint:
    try:
        pk = UUID(str(endpoint_id))
    except ValueError:
        pk = None
    endpoint = WebhookEndpoint.objects.filter(pk=pk, user=user).first() if pk else None
    if endpoint is None:
        # Someone else's endpoint is as unknown as a missing one.
        raise NotFound("No webhook endpoint of yours has that id.", code="webhook_not_found")
    return endpoint


def webhook_endpoint_get(*, user: User, endpoint_id: str) -> WebhookEndpoint:
    return _own_endpoint(user, endpoint_id)


def webhook_endpoint_delete(*, user: User, endpoint_id: str) -> None:
    """Delete the endpoint with its deliveries and log (a delivery in flight finds it gone)."""
    _own_endpoint(user, endpoint_id).delete()


def webhook_endpoints_remove(*, user_id: UUID) -> int:
    """Every endpoint of a user (the account is being deleted)."""
    count, _ = WebhookEndpoint.objects.filter(user_id=user_id).delete()
    return count


def webhook_endpoint_test(*, user: User, endpoint_id: str) -> Event:
    """A `webhook.test` event whose only delivery is to this endpoint."""
    with transaction.atomic():
        endpoint = _own_endpoint(user, endpoint_id)
        cause = f"webhook.test:{endpoint.pk}:{uuid.uuid4().hex}"
        event_record(user_id=user.pk, type=EventType.WEBHOOK_TEST, data={}, cause=cause)
        event = Event.objects.get(cause=cause)
        # Written with the event: the fan-out gives a test event no other channel.
        Delivery.objects.create(
            event=event,
            channel=Channel.WEBHOOK,
            endpoint=endpoint,
            next_attempt_at=event.created_at,
            created_at=event.created_at,
        )
    return event


# --- fan-out --------------------------------------------------------------------------------


def _email_wanted(user: User, event_type: str) -> bool:
    if event_type == EventType.WEBHOOK_TEST or user.deleted_at is not None:
        return False
    if not user.email_verified:
        return False  # never mail an address nobody proved is theirs
    return not EmailPreference.objects.filter(
        user_id=user.pk, type=event_type, enabled=False
    ).exists()


def event_email(event: Event) -> tuple[str, str]:
    """(subject, plain text) of the message for `event`."""
    subject = SUBJECTS.get(event.type, f"Notification: {event.type}")
    text = render_to_string(
        "notifications/event.txt",
        {
            "type": event.type,
            "data": event.data,
            "event": event.payload(),
            "dashboard_url": settings.DASHBOARD_URL,
        },
    )
    return subject, text


def event_dispatch(*, event_id: UUID | str) -> list[int]:
    """Fan one event out to its channels, once; the ids of its webhook deliveries to attempt
    (empty when another dispatcher has it or had it)."""
    now = clock.now()
    with transaction.atomic():
        event = (
            Event.objects.select_for_update(skip_locked=True)
            .filter(pk=event_id, dispatched_at__isnull=True)
            .first()
        )
        if event is None:
            return []
        user = User.objects.get(pk=event.user_id)
        if event.type != EventType.WEBHOOK_TEST and user.deleted_at is None:
            endpoints = WebhookEndpoint.objects.filter(user_id=user.pk, enabled=True)
            Delivery.objects.bulk_create(
                [
                    Delivery(
                        event=event,
                        channel=Channel.WEBHOOK,
                        endpoint=endpoint,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    for endpoint in endpoints
                    if endpoint.wants(event.type)
                ],
                ignore_conflicts=True,
            )
        if _email_wanted(user, event.type):
            _email_delivery(event, user, now)
        Event.objects.filter(pk=event.pk).update(dispatched_at=now)
        ids = list(
            Delivery.objects.filter(
                event=event, channel=Channel.WEBHOOK, status=DeliveryStatus.PENDING
            ).values_list("pk", flat=True)
        )
        transaction.on_commit(count_event_dispatched)
    return ids


def _email_delivery(event: Event, user: User, now: datetime) -> None:
    subject, text = event_email(event)
    try:
        with transaction.atomic():  # a savepoint: the unique constraint is the backstop
            delivery = Delivery.objects.create(
                event=event,
                channel=Channel.EMAIL,
                status=DeliveryStatus.DELIVERED,
                attempts=1,
                created_at=now,
                delivered_at=now,
            )
    except IntegrityError:
        return  # this event's message was already handed over
    message = email_enqueue(to=user.email, subject=subject, body_text=text)
    Delivery.objects.filter(pk=delivery.pk).update(outbound_email_id=message.pk)
    transaction.on_commit(lambda: count_notification_delivery("email", "queued"))


# --- webhook attempts -----------------------------------------------------------------------


def _due(now: datetime) -> Q:
    return Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, lease_until__lt=now
    )


def retry_delay(attempts: int) -> timedelta | None:
    """The wait after `attempts` failed attempts, jittered; None when none is left."""
    if attempts > len(RETRY_DELAYS):
        return None
    base = RETRY_DELAYS[attempts - 1]
    return base * (1 + random.uniform(0, JITTER))  # noqa: S311  (jitter, not a secret)


def webhook_request(endpoint: WebhookEndpoint, event: Event) -> tuple[bytes, dict[str, str]]:
    """The body and Standard Webhooks headers of one attempt (a fresh timestamp each time;
    the id stays the event's, so receivers deduplicate retries)."""
    body = json.dumps(event.payload(), separators=(",", ":")).encode()
    # Real time, not the ledger's clock: receivers check it against theirs.
    sent_at = datetime.now(UTC)
    signature = Webhook(secret_decrypt(endpoint.secret_encrypted)).sign(
        event.public_id, sent_at, body
    )
    headers = {
        "webhook-id": event.public_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }
    return body, headers


def delivery_attempt(*, delivery_id: int) -> bool:
    """One attempt of a webhook delivery if it is due and unclaimed; True if delivered."""
    now = clock.now()
    taken = Delivery.objects.filter(_due(now), pk=delivery_id, channel=Channel.WEBHOOK).update(
        status=DeliveryStatus.SENDING, lease_until=now + LEASE, attempts=F("attempts") + 1
    )
    if not taken:
        return False
    delivery = Delivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.endpoint is None:
        return False  # the endpoint was deleted meanwhile (its deliveries with it)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        _record(delivery, outbound.Answer(None, "endpoint_disabled"), final=True)
        return False
    try:
        target = outbound.target_resolve(endpoint.url)
    except outbound.BlockedAddress:
        # Checked again at each delivery: DNS may have changed since the endpoint was created.
        answer = outbound.Answer(None, "blocked_address")
    else:
        body, headers = webhook_request(endpoint, delivery.event)
        answer = outbound.post(target, body=body, headers=headers)
    return _record(delivery, answer)


def _record(delivery: Delivery, answer: outbound.Answer, *, final: bool = False) -> bool:
    assert delivery.endpoint_id is not None  # a webhook delivery (the channel's CHECK)
    now = clock.now()
    ok = answer.status_code is not None and 200 <= answer.status_code < 300
    delay = None if ok or final else retry_delay(delivery.attempts)
    next_at = now + delay if delay is not None else None
    error = answer.error or ("" if ok else f"http_{answer.status_code}")
    if ok:
        status = DeliveryStatus.DELIVERED
    elif next_at is not None:
        status = DeliveryStatus.PENDING
    else:
        status = DeliveryStatus.FAILED
    with transaction.atomic():
        # Only the claimant's attempt may write its outcome (a sender past its lease whose row
        # was taken over finds `attempts` moved on and records nothing).
        written = Delivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.SENDING, attempts=delivery.attempts
        ).update(
            status=status,
            next_attempt_at=next_at,
            lease_until=None,
            last_status_code=answer.status_code,
            last_error=error[:500],
            delivered_at=now if ok else None,
        )
        if not written:
            return ok
        DeliveryAttempt.objects.create(
            delivery_id=delivery.pk,
            endpoint_id=delivery.endpoint_id,
            attempt=delivery.attempts,
            status_code=answer.status_code,
            error=error[:500],
            created_at=now,
            next_attempt_at=next_at,
        )
        endpoints = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
        if ok:
            endpoints.exclude(failing_since=None).update(failing_since=None)
        elif answer.error != "endpoint_disabled":
            endpoints.filter(failing_since=None).update(failing_since=now)
    outcome = "delivered" if ok else ("retry" if status == DeliveryStatus.PENDING else "failed")
    count_notification_delivery("webhook", outcome)
    if not ok:
        logger.info(
            "webhook delivery %s: attempt %s failed (%s)", delivery.pk, delivery.attempts, error
        )
        endpoints_disable_failing(endpoint_id=delivery.endpoint_id)
    return ok


def endpoints_disable_failing(*, endpoint_id: UUID | None = None) -> int:
    """Disable the endpoints whose every delivery has failed for `DISABLE_AFTER`, and mail
    their owners (once: the conditional update decides who writes the mail)."""
    now = clock.now()
    candidates = WebhookEndpoint.objects.filter(
        enabled=True, failing_since__lte=now - DISABLE_AFTER
    )
    if endpoint_id:
        candidates = candidates.filter(pk=str(endpoint_id))
    disabled = 0
    for endpoint in candidates.select_related("user"):
        with transaction.atomic():
            if not WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
                enabled=False,
                disabled_at=now,
                disabled_reason="every delivery failed for 5 days",
            ):
                continue
            disabled += 1
            user = endpoint.user
            if user.email_verified and user.deleted_at is None:
                email_enqueue(
                    to=user.email,
                    subject="Your webhook endpoint was disabled",
                    body_text=render_to_string(
                        "notifications/endpoint_disabled.txt",
                        {"url": endpoint.url, "since": endpoint.failing_since},
                    ),
                )
        logger.warning("webhook endpoint %s disabled after 5 days of failures", endpoint.pk)
    return disabled


def delivery_resend(*, delivery_id: int) -> bool:
    """Staff: make a webhook delivery due now again (from any state but in flight)."""
    now = clock.now()
    return bool(
        Delivery.objects.filter(pk=delivery_id, channel=Channel.WEBHOOK)
        .exclude(status=DeliveryStatus.SENDING, lease_until__gte=now)
        .update(status=DeliveryStatus.PENDING, next_attempt_at=now, lease_until=None)
    )


# --- the sweep ------------------------------------------------------------------------------


def events_undispatched(*, limit: int = 500) -> list[UUID]:
    return list(
        Event.objects.filter(dispatched_at__isnull=True)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )


def deliveries_due(*, limit: int = 500) -> list[int]:
    return list(
        Delivery.objects.filter(_due(clock.now()), channel=Channel.WEBHOOK)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def delivery_rows(*, user: User, endpoint_id: str, before: int | None, limit: int) -> list[Any]:
    """The endpoint's attempt log, newest first (one page, plus one row to tell if more)."""
    endpoint = _own_endpoint(user, endpoint_id)
    rows = DeliveryAttempt.objects.filter(endpoint=endpoint).select_related("delivery__event")
    if before is not None:
        rows = rows.filter(pk__lt=before)
    return list(rows.order_by("-pk")[: limit + 1])


def notification_settings(*, user_id: UUID) -> dict[str, Any]:
    """`{"low_balance_threshold", "email"}` as `GET /api/user/notifications` shows them."""
    account = CreditAccount.objects.filter(pk=user_id).only("low_balance_threshold").first()
    threshold = (
        account.low_balance_threshold
        if account is not None
        else CreditAccount._meta.get_field("low_balance_threshold").get_default()
    )
    return {"low_balance_threshold": threshold, "email": email_preferences(user_id=user_id)}
