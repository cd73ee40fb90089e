"""What each settled gateway request used.

One `UsageRecord` per settled request, written in the settle's own transaction on its first
settle only (a replayed settle writes nothing), so "why was I (not) charged?" can be answered
from the request id alone. Rows are plain single-row INSERTs and never updated: the usage issue
aggregates them into hourly buckets with a database trigger on insert.
"""

from django.db import models
from django.db.models import Q


class UsageOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"


class UsageRecord(models.Model):
    id = models.BigAutoField(primary_key=True)
    request_id = models.CharField(max_length=128)  # unique: see Meta.constraints
    # No index of its own: `usage_account_settled` (account, settled_at) serves it.
    account = models.ForeignKey(
        "credits.CreditAccount",
        on_delete=models.PROTECT,
        related_name="usage_records",
        db_index=False,
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    model = models.CharField(max_length=64, blank=True)
    # Plain integers, kept non-negative by one named CHECK (see Meta) rather than one implicit
    # CHECK per Positive*Field: PostgreSQL parses and evaluates each CHECK on every insert.
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    outcome = models.CharField(max_length=16, choices=UsageOutcome.choices)
    # `upstream_error`, `client_error`, `client_disconnected`, `timeout`, `hold_expired` (a
    # success that arrived after its hold expired and found no credit), or the gateway's text.
    reason = models.CharField(max_length=64, blank=True)
    http_status = models.SmallIntegerField(null=True, blank=True)
    charged = models.SmallIntegerField()
    settled_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Not `unique=True`, which would add a `_like` index nobody reads.
            models.UniqueConstraint(fields=["request_id"], name="usage_unique_request_id"),
            # A NULL `http_status` passes, as with the column CHECK it replaces: a CHECK refuses
            # only what is false.
            models.CheckConstraint(
                condition=Q(prompt_tokens__gte=0)
                & Q(completion_tokens__gte=0)
                & Q(charged__gte=0)
                & Q(http_status__gte=0),
                name="usage_counts_not_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["account", "settled_at"], name="usage_account_settled"),
        ]

    def __str__(self) -> str:
        return f"usage {self.request_id} ({self.outcome}, charged {self.charged})"
