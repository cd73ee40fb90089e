"""Issue 23 (bytes per request): a hold keeps the few values its authorize answer is rebuilt
from (`credits.gateway.decisions.allowed_answer`) instead of the answer itself, and the credits
its first settle answered instead of a `_settle` object merged into that JSON.

Six nullable columns without a default and a text one with a constant default: on PostgreSQL
each ADD COLUMN changes the catalogue only (no rewrite, no scan; the ACCESS EXCLUSIVE lock is
held for an instant). Added in the order
of their alignment (8, 4, 2 bytes, then the text), which is their order in the row: no padding
between them. Existing holds keep their stored `decision`, which replays read as before.
"""

from django.db import migrations, models


def _column(name: str, field: models.Field) -> migrations.AddField:  # type: ignore[type-arg]
    return migrations.AddField(model_name="hold", name=name, field=field)


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0020_reconcile_checkpoints"),
    ]

    operations = [
        _column("answer_available", models.BigIntegerField(blank=True, null=True)),
        _column("settled_available", models.BigIntegerField(blank=True, null=True)),
        _column("answer_limit", models.IntegerField(blank=True, null=True)),
        _column("answer_remaining", models.IntegerField(blank=True, null=True)),
        _column("answer_window", models.SmallIntegerField(blank=True, null=True)),
        _column("answer_format", models.SmallIntegerField(blank=True, null=True)),
        # Its default is kept in the catalogue, not written into the rows (PostgreSQL 11+).
        _column("answer_tier", models.CharField(blank=True, default="", max_length=32)),
    ]
