"""Balances, lots and entry amounts become 64-bit (issue 15, item 2): a paid grant that took a
balance past 2,147,483,647 failed and was never applied.

PostgreSQL: `credits.widen.widen_columns` changes each table without rewriting it under a long
lock (bigint twins kept in step by a trigger, copied in batches, CHECKs and indexes rebuilt on the
twins without blocking writes, then one catalogue-only swap). It runs for as long as the copy
takes, while the service keeps serving; re-running it after an interruption is safe. The reverse
is a plain `ALTER COLUMN ... TYPE integer`, which rewrites the tables and fails if any amount no
longer fits: a rollback for small databases only.

SQLite (the embedded default) stores every integer in up to 8 bytes already: state only.

`gateway` 0005 installs the hot path's functions with bigint results; their result types
change, so web processes must be restarted after this migration (the README's deploy order:
migrate, then start the new code).
"""

from django.db import migrations, models

from credits.widen import widen_columns

TABLES = [
    ("credits_creditaccount", "user_id", ["balance", "reserved"]),
    ("credits_lot", "id", ["granted", "remaining", "reserved"]),
    ("credits_ledgerentry", "id", ["amount", "balance_after"]),
]


def widen(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, pk, columns in TABLES:
        widen_columns(schema_editor.connection, table, pk, columns)


def narrow(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, _, columns in TABLES:
        schema_editor.execute(
            f"ALTER TABLE {table} "
            + ", ".join(f"ALTER COLUMN {column} TYPE integer" for column in columns),
            None,
        )


class Migration(migrations.Migration):
    atomic = False  # widen_columns runs its own short transactions

    dependencies = [
        ("credits", "0009_lot_clawback_owed"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="creditaccount",
                    name="balance",
                    field=models.BigIntegerField(default=0),
                ),
                migrations.AlterField(
                    model_name="creditaccount",
                    name="reserved",
                    field=models.BigIntegerField(default=0),
                ),
                migrations.AlterField(
                    model_name="lot", name="granted", field=models.BigIntegerField()
                ),
                migrations.AlterField(
                    model_name="lot", name="remaining", field=models.PositiveBigIntegerField()
                ),
                migrations.AlterField(
                    model_name="lot", name="reserved", field=models.BigIntegerField(default=0)
                ),
                migrations.AlterField(
                    model_name="ledgerentry", name="amount", field=models.BigIntegerField()
                ),
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="balance_after",
                    field=models.BigIntegerField(),
                ),
            ],
            database_operations=[migrations.RunPython(widen, narrow)],
        ),
    ]
