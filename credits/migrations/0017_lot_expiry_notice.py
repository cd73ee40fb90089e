"""`credits.expiring` (issue 17): each lot's next expiry notice, and the lots that already have
unspent credit expiring get their first one (7 days before expiry; the beat sends the 24-hour
one alone for a lot already inside 24 hours)."""

from datetime import timedelta

from django.db import migrations, models
from django.db.models import F
from django.utils import timezone


def first_notices(apps, schema_editor):
    Lot = apps.get_model("credits", "Lot")
    Lot.objects.filter(
        expires_at__gt=timezone.now(), expired_at__isnull=True, remaining__gt=0
    ).update(expiry_notice_at=F("expires_at") - timedelta(hours=168))


class Migration(migrations.Migration):

    dependencies = [
        ('credits', '0016_lean_pair_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='lot',
            name='expiry_notice_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='lot',
            index=models.Index(condition=models.Q(('expiry_notice_at__isnull', False)), fields=['expiry_notice_at'], name='lot_expiry_notice_due'),
        ),
        migrations.RunPython(first_notices, migrations.RunPython.noop),
    ]
