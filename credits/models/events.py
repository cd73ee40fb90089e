"""The event outbox (contract part 2, "Notifications").

An `Event` is written **in the transaction of the change that causes it** (a ledger entry, a
payment, a key change), so an event exists if and only if its cause committed. Each carries a
unique `cause` (its idempotency key: `credits.low:entry:<id>`, `credits.expiring:<lot>:168`, ...):
two writers racing on the same cause (two beats, a retried webhook) insert one row, the other's
`INSERT ... ON CONFLICT DO NOTHING` is a no-op. Delivery lives above the ledger
(`credits.notifications`): it fans each undispatched event out to the owner's channels after
commit and stamps `dispatched_at`. Events are never updated otherwise and never deleted while
the user exists.
"""

import uuid

from django.conf import settings
from django.db import models


class EventType(models.TextChoices):
    CREDITS_LOW = "credits.low"
    CREDITS_EXPIRING = "credits.expiring"
    CREDITS_EXPIRED = "credits.expired"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_REFUNDED = "payment.refunded"
    ACCOUNT_FROZEN = "account.frozen"
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    KEY_ROTATED = "key.rotated"
    KEY_EXPIRING = "key.expiring"
    AUTO_TOPUP_SUCCEEDED = "auto_topup.succeeded"
    AUTO_TOPUP_FAILED = "auto_topup.failed"
    AUTO_TOPUP_LIMIT_REACHED = "auto_topup.limit_reached"
    WEBHOOK_TEST = "webhook.test"


class Event(models.Model):
    # Public id `evt_<32 hex>` (see `public_id`); also the Standard Webhooks `webhook-id`.
    # Generated in the database too (`gen_random_uuid()`), for the hot path's SQL functions.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="events"
    )
    type = models.CharField(max_length=40, choices=EventType.choices)
    data = models.JSONField(default=dict)
    cause = models.CharField(max_length=200)  # unique: see Meta.constraints
    created_at = models.DateTimeField()
    # Set once the dispatcher has written this event's delivery rows; NULL = still to fan out
    # (the sweep's work list, a partial index keeps it small).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cause"], name="event_cause_unique"),
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="event_undispatched",
                condition=models.Q(dispatched_at__isnull=True),
            ),
            models.Index(fields=["user", "-created_at"], name="event_user_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"

    @property
    def public_id(self) -> str:
        return f"evt_{self.id.hex}"

    def payload(self) -> dict:
        """The JSON every channel sends: `{"id", "type", "created_at", "data"}`."""
        return {
            "id": self.public_id,
            "type": self.type,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }
