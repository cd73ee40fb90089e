"""Claw-backs that wait for holds: a lot records what a refund, dispute or reversed reward still
claims of it (`clawback_owed`), taken as each of its holds is released or expires, and what
spending made uncollectable (issue 15, item 1).

Large tables: the three columns are added with a constant default, which PostgreSQL (11+) stores
in the catalogue without rewriting the table. The CHECK is added NOT VALID (no scan under the
ACCESS EXCLUSIVE lock) and validated in a second statement, which takes only a SHARE UPDATE
EXCLUSIVE lock and lets reads and writes go on. SQLite re-creates the table, as it does for any
such change.

`gateway_settle` learns the rule in `gateway` 0004.
"""

from django.db import migrations, models
from django.db.models import F, Q

# Checked after `lot_reserved_within_remaining` (PostgreSQL checks in name order), so a bad
# `reserved` is still reported by its own constraint.
CHECK_NAME = "lot_what_is_owed_is_held"
CHECK = models.CheckConstraint(
    condition=Q(clawback_owed__gte=0)
    & Q(clawback_owed__lte=F("reserved"))
    & Q(clawback_uncollectable__gte=0)
    & Q(clawback_claimed__lte=F("granted"))
    & Q(clawback_claimed__gte=F("clawback_owed") + F("clawback_uncollectable")),
    name=CHECK_NAME,
)


def check_add(apps, schema_editor):
    lot = apps.get_model("credits", "Lot")
    if schema_editor.connection.vendor == "postgresql":
        sql = CHECK.constraint_sql(lot, schema_editor)  # "CONSTRAINT name CHECK (...)"
        schema_editor.execute(f"ALTER TABLE credits_lot ADD {sql} NOT VALID", None)
        schema_editor.execute(f"ALTER TABLE credits_lot VALIDATE CONSTRAINT {CHECK_NAME}", None)
    else:
        schema_editor.add_constraint(lot, CHECK)


def check_remove(apps, schema_editor):
    schema_editor.remove_constraint(apps.get_model("credits", "Lot"), CHECK)


class Migration(migrations.Migration):
    atomic = False  # the VALIDATE runs outside the ADD's transaction, under a lighter lock

    dependencies = [
        ("credits", "0008_models_to_their_apps"),
    ]

    operations = [
        migrations.AddField(
            model_name="lot",
            name="clawback_claimed",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="lot",
            name="clawback_owed",
            field=models.BigIntegerField(
                default=0,
                help_text="Claimed credits still held by live holds, taken when they end.",
            ),
        ),
        migrations.AddField(
            model_name="lot",
            name="clawback_uncollectable",
            field=models.BigIntegerField(
                default=0,
                help_text="Claimed credits that were spent before they could be taken back.",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddConstraint(model_name="lot", constraint=CHECK)],
            database_operations=[migrations.RunPython(check_add, check_remove)],
        ),
    ]
