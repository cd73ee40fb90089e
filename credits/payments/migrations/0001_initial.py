"""The payments models, moved here from the `credits` app in Django's state only: the tables
keep their names (`db_table`, and the M2M table `credits_package_customers` follows from it),
so no row or table is touched; content types and permissions follow
(`credits/migrations/_moved_models.py`). `credits` 0008 removes them from its state.
"""

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models

from credits.migrations import _moved_models as _moved

MODELS = ["package", "purchase", "stripeevent"]


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('credits', '0008_models_to_their_apps'),
        *_moved.CONTENT_TYPE_DEPENDENCIES,
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Package',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('slug', models.SlugField(help_text='The id clients send.', max_length=64, unique=True)),
                        ('name', models.CharField(max_length=100)),
                        ('credits', models.PositiveIntegerField()),
                        ('price_amount', models.PositiveIntegerField(help_text="In the currency's minor units (cents).")),
                        ('currency', models.CharField(default='usd', help_text='ISO 4217, lower case.', max_length=3)),
                        ('validity_months', models.PositiveSmallIntegerField(blank=True, help_text='Calendar months from payment; empty: never expires.', null=True)),
                        ('active', models.BooleanField(default=True, help_text='Inactive packages cannot be bought.')),
                        ('enterprise', models.BooleanField(default=False, help_text='Visible to and buyable by the chosen customers only.')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('customers', models.ManyToManyField(blank=True, related_name='enterprise_packages', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'credits_package',
                        'ordering': ('price_amount', 'slug'),
                    },
                ),
                migrations.CreateModel(
                    name='Purchase',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('credits', models.PositiveIntegerField()),
                        ('price_amount', models.PositiveIntegerField()),
                        ('currency', models.CharField(max_length=3)),
                        ('validity_months', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('status', models.CharField(choices=[('pending', 'pending: checkout not completed'), ('paid', 'paid: credits granted'), ('partially_refunded', 'partially refunded'), ('refunded', 'refunded in full'), ('disputed', 'disputed: account frozen'), ('needs_review', 'needs review: payment disagrees, nothing granted'), ('failed', 'failed: the payment did not go through'), ('expired', 'expired: checkout abandoned')], default='pending', max_length=24)),
                        ('status_reason', models.TextField(blank=True, help_text='Why it needs review, or notes.')),
                        ('idempotency_key', models.CharField(blank=True, max_length=255, null=True)),
                        ('checkout_session_id', models.CharField(blank=True, max_length=255, null=True, unique=True)),
                        ('checkout_url', models.URLField(blank=True, max_length=2000)),
                        ('payment_intent_id', models.CharField(blank=True, max_length=255, null=True, unique=True)),
                        ('charge_id', models.CharField(blank=True, max_length=255, null=True, unique=True)),
                        ('dispute_id', models.CharField(blank=True, max_length=255, null=True, unique=True)),
                        ('dispute_status', models.CharField(blank=True, max_length=32)),
                        ('amount_paid', models.PositiveIntegerField(blank=True, null=True)),
                        ('currency_paid', models.CharField(blank=True, max_length=3)),
                        ('paid_at', models.DateTimeField(blank=True, help_text="The paying event's time.", null=True)),
                        ('amount_refunded', models.PositiveIntegerField(default=0)),
                        ('credits_clawed_back', models.PositiveIntegerField(default=0)),
                        ('created_at', models.DateTimeField()),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('lot', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='purchase', to='credits.lot')),
                        ('package', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='purchases', to='payments.package')),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='purchases', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'credits_purchase',
                        'ordering': ('-created_at',),
                    },
                ),
                migrations.CreateModel(
                    name='StripeEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('event_id', models.CharField(max_length=255, unique=True)),
                        ('type', models.CharField(db_index=True, max_length=100)),
                        ('livemode', models.BooleanField(default=False)),
                        ('api_version', models.CharField(blank=True, max_length=32)),
                        ('created', models.DateTimeField(help_text="Stripe's `created` time of the event.")),
                        ('payload', models.JSONField()),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('processed', 'Processed'), ('ignored', 'ignored: a type or object we do not handle'), ('failed', 'Failed')], default='pending', max_length=16)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('error', models.TextField(blank=True)),
                        ('received_at', models.DateTimeField()),
                        ('processed_at', models.DateTimeField(blank=True, null=True)),
                        ('purchase', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='events', to='payments.purchase')),
                    ],
                    options={
                        'db_table': 'credits_stripeevent',
                        'ordering': ('-received_at',),
                    },
                ),
                migrations.AddConstraint(
                    model_name='package',
                    constraint=models.CheckConstraint(condition=models.Q(('credits__gt', 0)), name='package_credits_positive'),
                ),
                migrations.AddConstraint(
                    model_name='package',
                    constraint=models.CheckConstraint(condition=models.Q(('price_amount__gt', 0)), name='package_price_positive'),
                ),
                migrations.AddConstraint(
                    model_name='package',
                    constraint=models.CheckConstraint(condition=models.Q(('currency__regex', '^[a-z]{3}$')), name='package_currency_lower_iso'),
                ),
                migrations.AddConstraint(
                    model_name='package',
                    constraint=models.CheckConstraint(condition=models.Q(('validity_months__isnull', True), ('validity_months__gt', 0), _connector='OR'), name='package_validity_positive'),
                ),
                migrations.AddIndex(
                    model_name='purchase',
                    index=models.Index(fields=['user', '-created_at'], name='purchase_user_newest'),
                ),
                migrations.AddConstraint(
                    model_name='purchase',
                    constraint=models.UniqueConstraint(condition=models.Q(('idempotency_key__isnull', False)), fields=('user', 'idempotency_key'), name='purchase_unique_client_idempotency_key'),
                ),
                migrations.AddConstraint(
                    model_name='purchase',
                    constraint=models.CheckConstraint(condition=models.Q(('credits__gt', 0)), name='purchase_credits_positive'),
                ),
                migrations.AddConstraint(
                    model_name='purchase',
                    constraint=models.CheckConstraint(condition=models.Q(('price_amount__gt', 0)), name='purchase_price_positive'),
                ),
                migrations.AddConstraint(
                    model_name='purchase',
                    constraint=models.CheckConstraint(condition=models.Q(('lot__isnull', True), ('paid_at__isnull', False), _connector='OR'), name='purchase_granted_only_when_paid'),
                ),
                migrations.AddIndex(
                    model_name='stripeevent',
                    index=models.Index(condition=models.Q(('status__in', ['pending', 'failed'])), fields=['received_at'], name='stripe_event_unfinished'),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(*_moved.content_types_mover("credits", "payments", MODELS)),
    ]
