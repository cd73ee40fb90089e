"""The requests list pages through one account's usage records newest first by (settled_at, id):
the index on (account, settled_at) becomes (account, settled_at, id), which still serves the
usage report's range reads. On PostgreSQL both are built and dropped CONCURRENTLY (no lock that
blocks the settles' inserts on a large table), so this migration is not atomic; the new index is
built before the old one goes, so no read is ever without one. SQLite (the embedded default) has
no concurrent form and runs the plain one."""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class _ConcurrentOnPostgres:
    """The concurrent operation on PostgreSQL, its plain base (`plain`) elsewhere."""

    plain: Any

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, *args)  # type: ignore[misc]
        else:
            self.plain.database_forwards(self, app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, *args)  # type: ignore[misc]
        else:
            self.plain.database_backwards(self, app_label, schema_editor, *args)


class AddIndexLive(_ConcurrentOnPostgres, AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexLive(_ConcurrentOnPostgres, RemoveIndexConcurrently):
    plain = migrations.RemoveIndex


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
