"""The closed hours' usage totals of the admin index (issue 23: credits/usage/models.py). A new,
small table (24 rows a day): nothing to lock on a large one."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='UsageHour',
            fields=[
                ('hour', models.DateTimeField(help_text='Start of the UTC hour.', primary_key=True, serialize=False)),
                ('requests', models.BigIntegerField(help_text='Settled requests, every account.')),
                ('credits', models.BigIntegerField(help_text='Charged requests, every account.')),
            ],
        ),
    ]
