"""Usage records lose their own index on `api_key` (issue 23: one index entry per settle): a
key's records are only ever read within their account and a time range, which
`usage_account_settled_id` serves with the key as a filter, and keys are never deleted (they
are revoked). Dropped CONCURRENTLY on PostgreSQL (not atomic)."""

import django.db.models.deletion
from django.db import migrations, models

from config.migration_ops import fk_index_drop


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0008_apikey_spend_controls_and_rotation"),
        ("gateway", "0008_settle_batch"),
    ]

    operations = [
        fk_index_drop(
            "gateway",
            "usagerecord",
            "api_key",
            models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="accounts.apikey",
            ),
        )
    ]
