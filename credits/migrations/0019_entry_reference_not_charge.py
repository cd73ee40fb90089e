"""The admin's exact search by reference (issue 23): an index on ledger entries' `reference`
for every kind but `charge`.

Charges are nearly every entry (one per settled request) and are searched through their hold's
unique request id instead (`credits.admin.entry_search`), so this index is written by grants,
adjustments, expiries and claw-backs only: the hot path's pair writes nothing to it (the full
index dropped in 0016 cost one entry per charge).

Built CONCURRENTLY on PostgreSQL (not atomic): writes go on meanwhile; on 10 million entries
it reads the table once and keeps the few thousand rows that are not charges."""

from django.conf import settings
from django.db import migrations, models

from config.migration_ops import AddIndexLive


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("credits", "0018_account_auto_topup"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexLive(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("kind", "charge"), _negated=True),
                fields=["reference"],
                name="entry_reference_not_charge",
            ),
        ),
    ]
