"""Issue 23 (bytes per request): a usage record's request id is no longer indexed. Its hold's
unique index is the way in from a request id, and the settle that writes the record is the one
that moves the hold, locked, out of `live` (`credits.gateway.models.UsageRecord`): the second
unique index said the same again for 76 bytes a request. Dropped waiting at most a few seconds
for the table's lock (`config.migration_ops.UniqueDrop`)."""

from django.db import migrations

from config.migration_ops import UniqueDrop


class Migration(migrations.Migration):
    atomic = False  # the reverse builds the index CONCURRENTLY

    dependencies = [
        ("gateway", "0012_hold_answer_rebuilt"),
    ]

    operations = [UniqueDrop(model_name="usagerecord", name="usage_unique_request_id")]
