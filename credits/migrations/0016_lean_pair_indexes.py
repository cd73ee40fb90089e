"""Fewer index entries per authorize+settle pair (issue 23), each index checked against every
query that could read it:

- `entry_reference` (ledger entries' `reference`) goes: nothing filters on a reference (the
  admin searches it with `icontains`, which a btree cannot serve). One entry per charge.
- the hold's own index on `account` goes: every query of an account's holds asks for its live
  ones (`hold_live_account`), and accounts are never deleted. Two entries per pair (the insert,
  and the settle's update, which changes `status` and so is never HOT).
- the index on ledger entries' `created_by` becomes partial (`WHERE created_by_id IS NOT
  NULL`): it serves the same lookups of a staff member's entries, and charges (NULL) no longer
  add an entry. One entry per charge.

Dropped and built CONCURRENTLY on PostgreSQL (not atomic): writes go on meanwhile."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from config.migration_ops import AddIndexLive, RemoveIndexLive, fk_index_drop


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("credits", "0015_low_balance_threshold"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        RemoveIndexLive(model_name="ledgerentry", name="entry_reference"),
        fk_index_drop(
            "credits",
            "hold",
            "account",
            models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="holds",
                to="credits.creditaccount",
            ),
        ),
        # The partial index first, so that a staff member's entries are never without one.
        AddIndexLive(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("created_by__isnull", False)),
                fields=["created_by"],
                name="entry_created_by",
            ),
        ),
        fk_index_drop(
            "credits",
            "ledgerentry",
            "created_by",
            models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
