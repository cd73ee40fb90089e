"""An index on the usage buckets' `hour` (issue 23): the admin index sums the day's consumed
credits from every account's buckets of the day (credits.usage.dashboard) instead of the
day's charge entries in the ledger.

One entry per new bucket row (account, key, model, hour); the settle's upsert of an existing
row changes no indexed column and stays HOT. Built CONCURRENTLY on PostgreSQL (not atomic):
the settles' upserts go on meanwhile."""

from django.db import migrations, models

from config.migration_ops import AddIndexLive


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("gateway", "0011_settle_auto_topup"),
    ]

    operations = [
        AddIndexLive(
            model_name="usagebucket",
            index=models.Index(fields=["hour"], name="usagebucket_hour"),
        ),
    ]
