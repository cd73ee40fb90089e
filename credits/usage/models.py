"""Every account's usage of one closed UTC hour: the admin index's "consumed today" without
reading the day's buckets (issue 23).

Design: one `UsageHour` row per UTC hour, summed once from that hour's usage buckets by the beat
(`credits.usage.tasks.usage_hours_roll_up`) as soon as the hour can no longer change: its end
plus `SETTLE_GRACE` (a settle's transaction is bounded by the statement and idle-in-transaction
timeouts, well inside it). The index page then reads at most 24 of these rows and the buckets
of the hours not rolled up yet (the current one, usually), so its cost is an hour's buckets,
not a day's (a day at 100 million requests is millions of buckets). The rows are a cache of
the buckets, never the truth: an hour without a row is read from its buckets, so a beat that
is down makes the page slower, never wrong.
"""

from django.db import models


class UsageHour(models.Model):
    hour = models.DateTimeField(primary_key=True, help_text="Start of the UTC hour.")
    requests = models.BigIntegerField(help_text="Settled requests, every account.")
    credits = models.BigIntegerField(help_text="Charged requests, every account.")

    def __str__(self) -> str:
        return f"usage of {self.hour:%Y-%m-%d %H}:00 ({self.requests})"
