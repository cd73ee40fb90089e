"""Usage aggregated by hour, so that a usage report costs in proportion to the buckets it shows,
not to the requests behind them.

Design: one `UsageBucket` row per (account, API key, model, UTC hour). The rows are written by
the database itself: an AFTER INSERT trigger on `credits_usagerecord` (migration 0005) upserts
the bucket of every settled request, in the settle's own transaction. So a settled request shows
in the report the instant its settle commits, no worker or cache can lag or double count, and
the settle path pays for one indexed upsert of a row that, within an hour, is almost always
already there (an UPDATE of non-indexed columns, which PostgreSQL can do as a HOT update).
The settle already holds its account's row lock, so the bucket's row lock adds no contention.

Daily figures are summed from the hourly rows at read time rather than kept in a second table:
a day is at most 24 rows per (key, model), the default 30-day report reads at most 720 per
(key, model) through the (account, hour) index, and a second table would double the work the
trigger adds to every settle for a read that is already cheap.

Definitions (CONTRACT.md): `requests` counts settled requests, successes and failures alike;
`credits` counts the charged ones; the token sums add up the charged requests only.

The API key is nullable (a request settled without a known key). PostgreSQL 15's NULLS NOT
DISTINCT would do on PostgreSQL but not on SQLite, the embedded default, where Django would
silently skip the constraint; two partial unique constraints (one for keyed rows, one for
keyless ones) mean the same on both engines, and each trigger branch names its conflict target.
"""

from django.db import models
from django.db.models import F, Q

from .ledger import CreditAccount


class UsageBucket(models.Model):
    """What one account used in one UTC hour through one API key and model. Written only by the
    database trigger on `credits_usagerecord`; read by `credits.usage.selectors`."""

    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="usage_buckets", db_index=False
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    model = models.CharField(max_length=64)
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    # Plain integers: `usagebucket_credits_within_requests` (0 <= credits <= requests) keeps
    # both non-negative, so the trigger's upsert evaluates no implicit CHECK of its own.
    requests = models.IntegerField(default=0, help_text="Settled requests.")
    credits = models.IntegerField(default=0, help_text="Charged requests.")
    prompt_tokens = models.BigIntegerField(default=0, help_text="Of charged requests.")
    completion_tokens = models.BigIntegerField(default=0, help_text="Of charged requests.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "api_key", "model", "hour"],
                condition=Q(api_key__isnull=False),
                name="usagebucket_one_per_key_model_hour",
            ),
            models.UniqueConstraint(
                fields=["account", "model", "hour"],
                condition=Q(api_key__isnull=True),
                name="usagebucket_one_per_keyless_model_hour",
            ),
            models.CheckConstraint(
                condition=Q(credits__gte=0) & Q(credits__lte=F("requests")),
                name="usagebucket_credits_within_requests",
            ),
            models.CheckConstraint(
                condition=Q(prompt_tokens__gte=0) & Q(completion_tokens__gte=0),
                name="usagebucket_tokens_not_negative",
            ),
        ]
        indexes = [
            # Every report reads one account's buckets over a time range.
            models.Index(fields=["account", "hour"], name="usagebucket_account_hour"),
        ]

    def __str__(self) -> str:
        return f"usage of {self.account_id} at {self.hour:%Y-%m-%d %H}:00 ({self.requests})"
