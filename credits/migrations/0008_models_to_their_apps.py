"""Tiers and usage records/buckets move to `credits.gateway`, packages, purchases and Stripe
events to `credits.payments`: removed from this app's state only (no table is dropped or
renamed); `gateway` 0001 and `payments` 0001 add them to theirs under the same tables.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0007_gateway_lean_writes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="package",
                    name="customers",
                ),
                migrations.RemoveField(
                    model_name="purchase",
                    name="package",
                ),
                migrations.RemoveField(
                    model_name="purchase",
                    name="lot",
                ),
                migrations.RemoveField(
                    model_name="purchase",
                    name="user",
                ),
                migrations.RemoveField(
                    model_name="stripeevent",
                    name="purchase",
                ),
                migrations.DeleteModel(
                    name="Tier",
                ),
                migrations.RemoveField(
                    model_name="usagebucket",
                    name="account",
                ),
                migrations.RemoveField(
                    model_name="usagebucket",
                    name="api_key",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="account",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="api_key",
                ),
                migrations.DeleteModel(
                    name="Package",
                ),
                migrations.DeleteModel(
                    name="Purchase",
                ),
                migrations.DeleteModel(
                    name="StripeEvent",
                ),
                migrations.DeleteModel(
                    name="UsageBucket",
                ),
                migrations.DeleteModel(
                    name="UsageRecord",
                ),
            ],
            database_operations=[],
        ),
    ]
