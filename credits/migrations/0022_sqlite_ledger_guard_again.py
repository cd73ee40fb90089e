"""The ledger's append-only guard on SQLite, made again where a table rebuild lost it.

SQLite cannot alter a column in place: Django re-creates the table (new table, copy, drop,
rename), and the old table's triggers go with it. `credits` 0010 widened the entries' amounts
that way, so an embedded database migrated from zero had no `credits_ledgerentry_no_update` /
`_no_delete` since (PostgreSQL alters in place and kept its guard). Same triggers as `0002`,
`IF NOT EXISTS`, so a database that has them is unchanged. Nothing on PostgreSQL."""

import importlib

from django.db import migrations

_0002 = importlib.import_module("credits.migrations.0002_ledger_append_only_and_seed")


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in _0002.SQLITE_FORWARD:
            schema_editor.execute(sql.replace("CREATE TRIGGER", "CREATE TRIGGER IF NOT EXISTS"))


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0021_hold_answer_columns"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop, elidable=False)]
