"""What each settled gateway request used.

One `UsageRecord` per settled request, written in the settle's own transaction on its first
settle only (a replayed settle writes nothing), so "why was I (not) charged?" can be answered
from the request id alone. Rows are plain single-row INSERTs and never updated: the usage issue
aggregates them into hourly buckets with a database trigger on insert.
"""

from django.db import models


class UsageOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"


class UsageRecord(models.Model):
    id = models.BigAutoField(primary_key=True)
    request_id = models.CharField(max_length=128, unique=True)
    account = models.ForeignKey(
        "credits.CreditAccount", on_delete=models.PROTECT, related_name="usage_records"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    model = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=16, choices=UsageOutcome.choices)
    # `upstream_error`, `client_error`, `client_disconnected`, `timeout`, `hold_expired` (a
    # success that arrived after its hold expired and found no credit), or the gateway's text.
    reason = models.CharField(max_length=64, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    charged = models.PositiveSmallIntegerField()
    settled_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["account", "settled_at"], name="usage_account_settled"),
        ]

    def __str__(self) -> str:
        return f"usage {self.request_id} ({self.outcome}, charged {self.charged})"
