"""The requests list pages through one account's usage records newest first by (settled_at, id):
the index on (account, settled_at) becomes (account, settled_at, id), which still serves the
usage report's range reads. On PostgreSQL both are built and dropped CONCURRENTLY (no lock that
blocks the settles' inserts on a large table), so this migration is not atomic; the new index is
built before the old one goes, so no read is ever without one. SQLite (the embedded default) has
no concurrent form and runs the plain one."""

from django.db import migrations, models

from config.migration_ops import AddIndexLive, RemoveIndexLive


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("gateway", "0005_bigint_amounts")]

    operations = [
        AddIndexLive(
            model_name="usagerecord",
            index=models.Index(
                fields=["account", "settled_at", "id"], name="usage_account_settled_id"
            ),
        ),
        RemoveIndexLive(model_name="usagerecord", name="usage_account_settled"),
    ]
