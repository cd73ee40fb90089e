"""Usage records in monthly partitions on PostgreSQL (issue 23, "Data growth"); the design, and
why holds and ledger entries are not partitioned, are in credits/gateway/partitions.py.

The existing table is not copied: it becomes the first partition.

1. A CHECK `settled_at < bound` (the month after the one of tomorrow) is added NOT VALID
   (ACCESS EXCLUSIVE for an instant, no scan) and validated in its own statement (SHARE UPDATE
   EXCLUSIVE: settles go on inserting while it scans).
2. One transaction of catalogue changes only: the table is locked (ACCESS EXCLUSIVE, with a
   200 ms lock_timeout, tried again up to 50 times so that settles never queue behind a long
   wait), renamed `credits_usagerecord_legacy`, a partitioned `credits_usagerecord` created in
   its place and the legacy table attached as [MINVALUE, bound) without a scan (the validated
   CHECK proves the range); its index is attached to the parent's, its foreign keys adopted, the
   bucket trigger moved to the parent, a new sequence continues the ids, and the next months'
   partitions and the DEFAULT are created.

Measured on 3,000,000 rows (752 MB) with a writer inserting every 5 ms, load 5-7 on 2 cores
(bench/partitions.py): step 1 took 0.8-1.0 s and blocked nothing; step 2 held the lock
114-133 ms; the writer's slowest insert 104-136 ms (README, "Partitions and retention").

SQLite (the embedded default) has no partitions: nothing to do; retention deletes in batches.
Not reversible: going back would copy every row.
"""

import time
from datetime import UTC, datetime

from django.db import OperationalError, migrations, transaction

from credits.gateway import partitions

ATTEMPTS = 50


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        if partitions.is_partitioned(cursor):
            return
        now = datetime.now(UTC)
        bound = partitions.legacy_bound(now)
        partitions.convert_prepare(cursor, bound)
    for attempt in range(ATTEMPTS):
        try:
            with transaction.atomic(using=schema_editor.connection.alias):
                with schema_editor.connection.cursor() as cursor:
                    partitions.convert_switch(cursor, bound, now)
            return
        except OperationalError:  # lock_timeout: the table was busy; try again
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.5)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("gateway", "0014_usage_records_request_id_not_unique"),
    ]

    operations = [migrations.RunPython(forward, elidable=False)]
