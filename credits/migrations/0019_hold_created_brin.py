"""A BRIN index on the holds' `created_at`, for the retention's batched deletes of settled holds
(credits/retention.py, issue 23): each delete reads only the block ranges of its time window.

BRIN rather than a B-tree: holds are inserted in `created_at` order, so a summary per 128 pages
(a few pages of index for millions of holds) leads a range scan to the right blocks, and an
insert writes no index entry (a B-tree would add one per pair, which issue 23 removes
elsewhere); `autosummarize` summarizes each filled range in the background. Built CONCURRENTLY
(no lock that blocks authorizes). PostgreSQL only: SQLite has no BRIN, and its retention scans
its small tables; the index is not in Django's model state for that reason.
"""

from django.db import migrations

CREATE = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS hold_created_brin ON credits_hold"
    " USING brin (created_at) WITH (autosummarize = on)"
)
DROP = "DROP INDEX CONCURRENTLY IF EXISTS hold_created_brin"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, None)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("credits", "0018_account_auto_topup"),
    ]

    operations = [migrations.RunPython(forward, backward)]
