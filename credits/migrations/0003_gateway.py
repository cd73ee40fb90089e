"""The gateway's hot path: usage records, and (on PostgreSQL) one SQL function per database
round trip of `POST /internal/v1/authorize` and `POST /internal/v1/settle`.

The functions (now in `credits/gateway/sql/`, installed by `gateway` 0002) are a fast
implementation of exactly what `credits.services.hold_create`, `hold_commit` and `hold_release` do, for the common case only: an account with nothing due
(`next_event_at > now`), a live hold whose lot has not expired. In every other case they write
nothing and answer `due` / `fallback`, and the caller runs the Python services, so that expiry
logic lives in one place. They keep every figure `credits.reconciliation` checks: lot and
account `reserved`/`remaining`/`balance`/`consumed`, `next_event_at`, and the charge entry
(`charge:{hold_id}`, reference `request:{request_id}`, running `balance_after`). Lock order is
the services' own: the account row first, then its hold and lot rows. `now` is always a
parameter (the ledger's clock, which tests move). SQLite (the embedded default) runs the
services only.
"""

import django.db.models.deletion
from django.db import migrations, models

# The SQL functions this migration first created now have one current text each, in
# `credits/gateway/sql/*.sql`, installed by `gateway` 0002 (which replaces them on a database
# migrated before it, and creates them on a fresh one): nothing is run here any more.


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("credits", "0002_ledger_append_only_and_seed"),
    ]

    operations = [
        migrations.CreateModel(
            name="UsageRecord",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("request_id", models.CharField(max_length=128, unique=True)),
                ("model", models.CharField(blank=True, max_length=64)),
                ("prompt_tokens", models.PositiveIntegerField(default=0)),
                ("completion_tokens", models.PositiveIntegerField(default=0)),
                (
                    "outcome",
                    models.CharField(
                        choices=[("success", "Success"), ("failure", "Failure")], max_length=16
                    ),
                ),
                ("reason", models.CharField(blank=True, max_length=64)),
                ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("charged", models.PositiveSmallIntegerField()),
                ("settled_at", models.DateTimeField()),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage_records",
                        to="credits.creditaccount",
                    ),
                ),
                (
                    "api_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="accounts.apikey",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["account", "settled_at"], name="usage_account_settled")
                ],
            },
        ),
        migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop),
    ]
