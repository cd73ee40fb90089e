"""The gateway's models, moved here from the `credits` app in Django's state only: the tables
keep their names (`db_table`), so no row or table is touched; content types and permissions
follow (`credits/migrations/_moved_models.py`). `credits` 0008 removes them from its state.
"""

import django.db.models.deletion
from django.db import migrations, models

from credits.migrations import _moved_models as _moved

MODELS = ["tier", "usagerecord", "usagebucket"]


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('accounts', '0003_normalize_user_emails'),
        ('credits', '0008_models_to_their_apps'),
        *_moved.CONTENT_TYPE_DEPENDENCIES,
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Tier',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=32, unique=True)),
                        ('min_balance', models.PositiveIntegerField()),
                        ('max_balance', models.PositiveIntegerField(blank=True, help_text='Empty: no upper bound.', null=True)),
                        ('requests_per_minute', models.PositiveIntegerField()),
                        ('requests_per_hour', models.PositiveIntegerField()),
                        ('requests_per_day', models.PositiveIntegerField()),
                    ],
                    options={
                        'db_table': 'credits_tier',
                        'ordering': ('min_balance',),
                        'constraints': [models.CheckConstraint(condition=models.Q(('min_balance__gte', 1)), name='tier_min_balance_positive'), models.CheckConstraint(condition=models.Q(('max_balance__isnull', True), ('max_balance__gte', models.F('min_balance')), _connector='OR'), name='tier_max_not_below_min'), models.CheckConstraint(condition=models.Q(('requests_per_minute__gt', 0), ('requests_per_hour__gt', 0), ('requests_per_day__gt', 0)), name='tier_limits_positive')],
                    },
                ),
                migrations.CreateModel(
                    name='UsageBucket',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('model', models.CharField(max_length=64)),
                        ('hour', models.DateTimeField(help_text='Start of the UTC hour.')),
                        ('requests', models.IntegerField(default=0, help_text='Settled requests.')),
                        ('credits', models.IntegerField(default=0, help_text='Charged requests.')),
                        ('prompt_tokens', models.BigIntegerField(default=0, help_text='Of charged requests.')),
                        ('completion_tokens', models.BigIntegerField(default=0, help_text='Of charged requests.')),
                        ('account', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='usage_buckets', to='credits.creditaccount')),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.apikey')),
                    ],
                    options={
                        'db_table': 'credits_usagebucket',
                        'indexes': [models.Index(fields=['account', 'hour'], name='usagebucket_account_hour')],
                        'constraints': [models.UniqueConstraint(condition=models.Q(('api_key__isnull', False)), fields=('account', 'api_key', 'model', 'hour'), name='usagebucket_one_per_key_model_hour'), models.UniqueConstraint(condition=models.Q(('api_key__isnull', True)), fields=('account', 'model', 'hour'), name='usagebucket_one_per_keyless_model_hour'), models.CheckConstraint(condition=models.Q(('credits__gte', 0), ('credits__lte', models.F('requests'))), name='usagebucket_credits_within_requests'), models.CheckConstraint(condition=models.Q(('prompt_tokens__gte', 0), ('completion_tokens__gte', 0)), name='usagebucket_tokens_not_negative')],
                    },
                ),
                migrations.CreateModel(
                    name='UsageRecord',
                    fields=[
                        ('id', models.BigAutoField(primary_key=True, serialize=False)),
                        ('request_id', models.CharField(max_length=128)),
                        ('model', models.CharField(blank=True, max_length=64)),
                        ('prompt_tokens', models.IntegerField(default=0)),
                        ('completion_tokens', models.IntegerField(default=0)),
                        ('outcome', models.CharField(choices=[('success', 'Success'), ('failure', 'Failure')], max_length=16)),
                        ('reason', models.CharField(blank=True, max_length=64)),
                        ('http_status', models.SmallIntegerField(blank=True, null=True)),
                        ('charged', models.SmallIntegerField()),
                        ('settled_at', models.DateTimeField()),
                        ('account', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='usage_records', to='credits.creditaccount')),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.apikey')),
                    ],
                    options={
                        'db_table': 'credits_usagerecord',
                        'indexes': [models.Index(fields=['account', 'settled_at'], name='usage_account_settled')],
                        'constraints': [models.UniqueConstraint(fields=('request_id',), name='usage_unique_request_id'), models.CheckConstraint(condition=models.Q(('prompt_tokens__gte', 0), ('completion_tokens__gte', 0), ('charged__gte', 0), ('http_status__gte', 0)), name='usage_counts_not_negative')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(*_moved.content_types_mover("credits", "gateway", MODELS)),
    ]
