"""`credits.expiring` (issue 17): each lot's next expiry notice, and the lots that already have
unspent credit expiring get their first one (7 days before expiry; the beat sends the 24-hour
one alone for a lot already inside 24 hours)."""

from datetime import timedelta

from django.db import migrations, models
from django.db.models import F
from django.utils import timezone

from config.migration_ops import AddIndexLive


BATCH = 5000


def first_notices(apps, schema_editor):
    # In batches, each its own short transaction (the migration is not atomic): one UPDATE of
    # every such lot would hold their row locks, and so block their settles, until it ended.
    Lot = apps.get_model("credits", "Lot")
    due = Lot.objects.filter(
        expires_at__gt=timezone.now(), expired_at__isnull=True, remaining__gt=0
    ).order_by("pk")
    last = 0
    while ids := list(due.filter(pk__gt=last).values_list("pk", flat=True)[:BATCH]):
        Lot.objects.filter(pk__in=ids).update(
            expiry_notice_at=F("expires_at") - timedelta(hours=168)
        )
        last = ids[-1]


class Migration(migrations.Migration):
    # A nullable column (metadata only), the index built CONCURRENTLY, the backfill in batches:
    # lots are written by every settle.
    atomic = False

    dependencies = [
        ('credits', '0016_lean_pair_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='lot',
            name='expiry_notice_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        AddIndexLive(
            model_name='lot',
            index=models.Index(condition=models.Q(('expiry_notice_at__isnull', False)), fields=['expiry_notice_at'], name='lot_expiry_notice_due'),
        ),
        migrations.RunPython(first_notices, migrations.RunPython.noop),
    ]
