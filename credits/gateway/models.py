"""Models of the gateway: rate-limit tiers, usage records and the hourly usage buckets.

The tables keep the names they had when these models lived in the `credits` app
(`db_table`): the models moved in Django's state only (migration `gateway.0001_initial`), and
the SQL functions of the hot path (`credits/gateway/sql/`) name the tables.

**Tiers.** A rate-limit tier is data staff edit, chosen by the balance before a request.

**Usage records.** What each settled gateway request used: one `UsageRecord` per settled
request, written in the settle's own transaction on its first settle only (a replayed settle
writes nothing), so "why was I (not) charged?" can be answered from the request id alone. Rows
are plain single-row INSERTs and never updated: a database trigger on insert aggregates them
into the hourly buckets.

**Usage buckets.** Usage aggregated by hour, so that a usage report costs in proportion to the
buckets it shows, not to the requests behind them.

Design: one `UsageBucket` row per (account, API key, model, UTC hour). The rows are written by
the database itself: an AFTER INSERT trigger on `credits_usagerecord` upserts the bucket of
every settled request, in the settle's own transaction. So a settled request shows
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

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from credits.models import CreditAccount


class Tier(models.Model):
    """A rate-limit tier, chosen by the balance before a request. Editable by staff."""

    name = models.CharField(max_length=32, unique=True)
    min_balance = models.PositiveIntegerField()
    max_balance = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: no upper bound."
    )
    requests_per_minute = models.PositiveIntegerField()
    requests_per_hour = models.PositiveIntegerField()
    requests_per_day = models.PositiveIntegerField()

    class Meta:
        db_table = "credits_tier"
        ordering = ("min_balance",)
        constraints = [
            models.CheckConstraint(
                condition=Q(min_balance__gte=1), name="tier_min_balance_positive"
            ),
            models.CheckConstraint(
                condition=Q(max_balance__isnull=True) | Q(max_balance__gte=F("min_balance")),
                name="tier_max_not_below_min",
            ),
            models.CheckConstraint(
                condition=Q(requests_per_minute__gt=0)
                & Q(requests_per_hour__gt=0)
                & Q(requests_per_day__gt=0),
                name="tier_limits_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.min_balance is None:
            return  # the field's own error says so; a None here would break the query below
        top = self.max_balance
        overlapping = Tier.objects.exclude(pk=self.pk).filter(
            Q(max_balance__isnull=True) | Q(max_balance__gte=self.min_balance)
        )
        if top is not None:
            overlapping = overlapping.filter(min_balance__lte=top)
        clash = overlapping.first()
        if clash is not None:
            raise ValidationError(f"The balance range overlaps the tier {clash.name}.")


class UsageOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"


class UsageRecord(models.Model):
    id = models.BigAutoField(primary_key=True)
    # Not indexed (issue 23): the hold of the same request id has the unique index, and is the
    # way in from a request id (`credits_hold.request_id` -> the hold's account and
    # `settled_at`, which are this record's, -> `usage_account_settled_id`). One record per
    # request is kept by the settle itself: it is written only by the settle that moves its
    # hold, locked, from `live` to settled, in that transaction (SQL and services alike; a
    # replayed settle writes nothing), which tests/gateway/test_races.py races 40 times at once.
    # The unique index it had cost 76 bytes a request (bench/growth.py) to say it again.
    request_id = models.CharField(max_length=128)
    # No index of its own: `usage_account_settled_id` (account, settled_at, id) serves it.
    account = models.ForeignKey(
        CreditAccount,
        on_delete=models.PROTECT,
        related_name="usage_records",
        db_index=False,
    )
    # No index of its own: a key's records are always read within their account and a time
    # range (`usage_account_settled_id`, the key a filter on it), and keys are never deleted
    # (revoked), so nothing needs one (issue 23: one index entry per settle).
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
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
        db_table = "credits_usagerecord"
        constraints = [
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
            # The usage report's cut hours (account, settled_at range), and the requests list's
            # cursor (newest first by settled_at, then id, for ties): one index serves both.
            models.Index(fields=["account", "settled_at", "id"], name="usage_account_settled_id"),
        ]

    def __str__(self) -> str:
        return f"usage {self.request_id} ({self.outcome}, charged {self.charged})"


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
        db_table = "credits_usagebucket"
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
            # The admin index's credits consumed today: every account's buckets of the day
            # (credits.usage.dashboard). Written once per new bucket row (account, key, model,
            # hour), never by the settle's upsert of an existing one (`hour` does not change,
            # so the update stays HOT).
            models.Index(fields=["hour"], name="usagebucket_hour"),
        ]

    def __str__(self) -> str:
        return f"usage of {self.account_id} at {self.hour:%Y-%m-%d %H}:00 ({self.requests})"
