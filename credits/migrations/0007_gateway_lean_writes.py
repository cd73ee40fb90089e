"""Less work per gateway request: fewer CHECKs, indexes and statements on the hot path.

Every INSERT or UPDATE makes PostgreSQL parse and evaluate each CHECK of the table anew, write an
entry in each of its indexes (all of them when the update is not HOT), and every statement of a
PL/pgSQL function sets up its own executor. So:

- CHECKs: the implicit ones of `Positive*Field`s that a named constraint already implies are
  gone (the fields are plain integers now), and a named constraint no longer repeats a bound the
  column's own CHECK keeps (`lot_remaining_within_granted`). Usage records keep their counts
  non-negative with one named CHECK instead of four implicit ones. Every invariant is still a
  CHECK.
- Indexes: no `_like` (varchar_pattern_ops) twins for unique columns only ever matched whole
  (UniqueConstraint instead of `unique=True`); the ledger's idempotency key, which
  `credits_adjust` also matches by prefix, has one unique pattern-ops index serving both; no
  plain FK index where a composite index starts with the same column; no index on holds'
  `lot`/`api_key` (nothing looks holds up by either, and neither is ever deleted).
- `gateway_authorize` and `gateway_settle` did the same with fewer statements (their text is now
  in `credits/gateway/sql/`, installed by `gateway` 0002). The two-step functions' `ON CONFLICT
  (request_id)` infers the new unique constraint as it did the old one.

SQLite (the embedded default) alters a table by re-creating it, which drops the triggers on it
and refuses to rename a table that another table's trigger names: the usage bucket triggers of
0005 are dropped first and re-created last, on SQLite only.
"""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

_0005 = importlib.import_module("credits.migrations.0005_usage_buckets")


def sqlite_bucket_triggers_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in _0005.SQLITE_REVERSE:
            schema_editor.execute(sql, None)


def sqlite_bucket_triggers_create(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in _0005.SQLITE_FORWARD:
            schema_editor.execute(sql, None)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_apikey_lean_indexes'),
        ('credits', '0006_ledger_permissions_and_dashboard_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(sqlite_bucket_triggers_drop, sqlite_bucket_triggers_create),
        migrations.RemoveConstraint(
            model_name='hold',
            name='hold_charged_within_amount',
        ),
        migrations.RemoveConstraint(
            model_name='lot',
            name='lot_remaining_within_granted',
        ),
        migrations.RemoveConstraint(
            model_name='usagebucket',
            name='usagebucket_credits_within_requests',
        ),
        migrations.AlterField(
            model_name='hold',
            name='amount',
            field=models.SmallIntegerField(default=1),
        ),
        migrations.AlterField(
            model_name='hold',
            name='api_key',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='accounts.apikey'),
        ),
        migrations.AlterField(
            model_name='hold',
            name='charged',
            field=models.SmallIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='hold',
            name='lot',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='holds', to='credits.lot'),
        ),
        migrations.AlterField(
            model_name='hold',
            name='request_id',
            field=models.CharField(max_length=128),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='account',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='entries', to='credits.creditaccount'),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='idempotency_key',
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='reference',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name='lot',
            name='granted',
            field=models.IntegerField(),
        ),
        migrations.AlterField(
            model_name='lot',
            name='reserved',
            field=models.IntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='usagebucket',
            name='credits',
            field=models.IntegerField(default=0, help_text='Charged requests.'),
        ),
        migrations.AlterField(
            model_name='usagebucket',
            name='requests',
            field=models.IntegerField(default=0, help_text='Settled requests.'),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='account',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='usage_records', to='credits.creditaccount'),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='charged',
            field=models.SmallIntegerField(),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='completion_tokens',
            field=models.IntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='http_status',
            field=models.SmallIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='prompt_tokens',
            field=models.IntegerField(default=0),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='request_id',
            field=models.CharField(max_length=128),
        ),
        migrations.AddIndex(
            model_name='ledgerentry',
            index=models.Index(fields=['reference'], name='entry_reference'),
        ),
        migrations.AddConstraint(
            model_name='hold',
            constraint=models.UniqueConstraint(fields=('request_id',), name='hold_unique_request_id'),
        ),
        migrations.AddConstraint(
            model_name='hold',
            constraint=models.CheckConstraint(condition=models.Q(('charged__gte', 0), ('charged__lte', models.F('amount'))), name='hold_charged_within_amount'),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.UniqueConstraint(fields=('idempotency_key',), name='entry_unique_idempotency_key', opclasses=['varchar_pattern_ops']),
        ),
        migrations.AddConstraint(
            model_name='lot',
            constraint=models.CheckConstraint(condition=models.Q(('remaining__lte', models.F('granted'))), name='lot_remaining_within_granted'),
        ),
        migrations.AddConstraint(
            model_name='usagebucket',
            constraint=models.CheckConstraint(condition=models.Q(('credits__gte', 0), ('credits__lte', models.F('requests'))), name='usagebucket_credits_within_requests'),
        ),
        migrations.AddConstraint(
            model_name='usagerecord',
            constraint=models.UniqueConstraint(fields=('request_id',), name='usage_unique_request_id'),
        ),
        migrations.AddConstraint(
            model_name='usagerecord',
            constraint=models.CheckConstraint(condition=models.Q(('prompt_tokens__gte', 0), ('completion_tokens__gte', 0), ('charged__gte', 0), ('http_status__gte', 0)), name='usage_counts_not_negative'),
        ),
        migrations.RunPython(sqlite_bucket_triggers_create, sqlite_bucket_triggers_drop),
        # The functions' new text is in `credits/gateway/sql/*.sql`, installed by `gateway` 0002.
        migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop),
    ]
