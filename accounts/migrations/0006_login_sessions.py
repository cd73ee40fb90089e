"""Login sessions (accounts.models.LoginSession), and a lifetime for the login tokens issued
before tokens had one: each gets LOGIN_TTL_DAYS from now, sliding from there, and a session
row so that its user can list and end it. The knox table is small (one row per login), so one
pass is enough; the reverse leaves tokens their new expiry."""

from datetime import timedelta
from typing import Any

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.conf import settings
from django.db import migrations, models


def give_old_tokens_a_lifetime(apps: Any, schema_editor: Any) -> None:
    token_model = apps.get_model(*settings.KNOX_TOKEN_MODEL.split("."))
    login_session = apps.get_model("accounts", "LoginSession")
    expires_at = django.utils.timezone.now() + timedelta(days=settings.LOGIN_TTL_DAYS)
    for token in token_model.objects.filter(expiry__isnull=True).iterator():
        token_model.objects.filter(pk=token.pk).update(expiry=expires_at)
        login_session.objects.create(
            user_id=token.user_id,
            auth_token_id=token.pk,
            created_at=token.created,
            last_used_at=token.created,
            expires_at=expires_at,
        )


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0005_existing_users_verified'),
        migrations.swappable_dependency(settings.KNOX_TOKEN_MODEL),
        # The token's current shape (expiry, created), which the data step reads.
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [
        migrations.CreateModel(
            name='LoginSession',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('session_key', models.CharField(blank=True, db_index=True, max_length=40)),
                ('user_agent', models.CharField(blank=True, max_length=200)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('last_used_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('expires_at', models.DateTimeField()),
                ('auth_token', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.KNOX_TOKEN_MODEL)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='login_sessions', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'indexes': [models.Index(fields=['user', 'expires_at'], name='loginsession_user_live')],
            },
        ),
        migrations.RunPython(give_old_tokens_a_lifetime, migrations.RunPython.noop),
    ]
