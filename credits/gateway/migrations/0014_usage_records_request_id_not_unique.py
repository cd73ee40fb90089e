"""Issue 23 (bytes per request): a usage record's request id is no longer indexed. Its hold's
unique index is the way in from a request id, and the settle that writes the record is the one
that moves the hold, locked, out of `live` (`credits.gateway.models.UsageRecord`): the second
unique index said the same again for 76 bytes a request. Dropped waiting at most a few seconds
for the table's lock (`config.migration_ops.UniqueDrop`). SQLite re-creates the table to drop
it, which drops the table's triggers: the usage buckets' two are dropped first and made again
after (as `credits` 0007 does)."""

import importlib

from django.db import migrations

from config.migration_ops import UniqueDrop

_0007 = importlib.import_module("credits.migrations.0007_gateway_lean_writes")


class Migration(migrations.Migration):
    atomic = False  # the reverse builds the index CONCURRENTLY

    dependencies = [
        ("gateway", "0013_hold_answer_rebuilt"),
    ]

    operations = [
        migrations.RunPython(
            _0007.sqlite_bucket_triggers_drop, _0007.sqlite_bucket_triggers_create
        ),
        UniqueDrop(model_name="usagerecord", name="usage_unique_request_id"),
        migrations.RunPython(
            _0007.sqlite_bucket_triggers_create, _0007.sqlite_bucket_triggers_drop
        ),
    ]
