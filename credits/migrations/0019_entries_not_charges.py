"""Ledger lists that never walk the charges (issue 23): three partial indexes of the entries
that are not charges, so the hot path's pair writes nothing to any of them.

- `entry_reference_not_charge` (reference): the admin's exact search by reference. Charges
  are nearly every entry (one per settled request) and are searched through their hold's
  unique request id instead (`credits.admin.entry_search`); the full index dropped in 0016 cost
  one entry per charge.
- `entry_kind_newest` (kind, id DESC): the admin's list of one kind, newest first.
- `entry_account_kind_newest` (account, kind, id DESC): a user's entries of one kind, newest
  first (`GET /api/user/ledger?kind=`, the admin's user and kind filters together).

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
        AddIndexLive(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("kind", "charge"), _negated=True),
                fields=["kind", "-id"],
                name="entry_kind_newest",
            ),
        ),
        AddIndexLive(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("kind", "charge"), _negated=True),
                fields=["account", "kind", "-id"],
                name="entry_account_kind_newest",
            ),
        ),
    ]
