"""Delivering the outbox's events (`credits.models.Event`) to email and signed webhooks.

- `EmailPreference`: one row per (user, type) the user turned off or on again; no row means
  on (every type is mailed by default), so a new type needs no backfill.
- `WebhookEndpoint`: a user's URL, the types it wants (`events` NULL = all), and its signing
  secret, stored encrypted (Fernet, key derived by HKDF from `WEBHOOK_SECRETS_KEY` or
  `SECRET_KEY`, `credits.notifications.secrets`): it must be readable to sign, so it cannot be
  hashed; a database dump alone does not give it away. `failing_since` is the first failure
  since the last success: an endpoint failing for `DISABLE_AFTER` is disabled.
- `Delivery`: one row per (event, endpoint) and one per event for the email channel (unique
  constraints: two dispatchers racing on one event write one row each way). A webhook delivery
  is claimed for an attempt with a conditional update (`status` pending and due, or a sender's
  lease run out), so the after-commit task and the sweep never both send it; it is retried on
  `RETRY_DELAYS` with jitter. The email channel hands the message to the mail outbox
  (`accounts.mail`) in the fan-out transaction, which then owns its sending and retries.
- `DeliveryAttempt`: the append-only log of webhook attempts (`GET .../deliveries`).

Delivery is at least once per channel: a sender that dies after the receiver answered but
before its update sends again after its lease; receivers deduplicate on `webhook-id`.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models

from credits.models import Event

# Delay before attempt n+1 after n failed attempts (the contract's schedule); past the last,
# the delivery fails for good. Each is stretched by up to JITTER, so that the retries of many
# deliveries to one receiver that was down do not arrive together.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.2
DISABLE_AFTER = timedelta(days=5)
MAX_ENDPOINTS_PER_USER = 10


class Channel(models.TextChoices):
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    SENDING = "sending"  # claimed by a sender until lease_until
    DELIVERED = "delivered"  # a 2xx answer (webhook) or handed to the mail outbox (email)
    FAILED = "failed"  # every attempt failed, or the endpoint went away


class EmailPreference(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_preferences"
    )
    type = models.CharField(max_length=40)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "type"], name="email_preference_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.type}: {'on' if self.enabled else 'off'}"


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(null=True, blank=True)  # a list of types; NULL = every type
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    # Fernet token of the `whsec_...` secret (never the secret itself; never shown in the admin).
    secret_encrypted = models.TextField()
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="webhook_user_recent")]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return self.events is None or event_type in self.events


class Delivery(models.Model):
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="deliveries",
    )
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The email channel's message in the mail outbox (accounts.OutboundEmail).
    outbound_email_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["event", "endpoint"],
                condition=models.Q(channel="webhook"),
                name="delivery_event_endpoint_unique",
            ),
            models.UniqueConstraint(
                fields=["event"],
                condition=models.Q(channel="email"),
                name="delivery_event_email_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(channel="email", endpoint__isnull=True)
                | models.Q(channel="webhook", endpoint__isnull=False),
                name="delivery_channel_endpoint",
            ),
        ]
        indexes = [
            # The sweep's work list: pending rows by due time.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=models.Q(status__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.event_id} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    # The delivery's endpoint again, so that an endpoint's log is one index range, newest first.
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="log")
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # NULL: no retry follows

    class Meta:
        indexes = [models.Index(fields=["endpoint", "-id"], name="attempt_endpoint_recent")]

    def __str__(self) -> str:
        return f"attempt {self.attempt}: {self.status_code or self.error}"
