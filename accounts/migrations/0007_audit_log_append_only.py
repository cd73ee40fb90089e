"""The audit log of staff writes (django-auditlog's `auditlog_logentry`) is append-only in the
database, like the ledger (config/append_only.py): UPDATE, DELETE and TRUNCATE are refused. A
consequence: a user named as an actor cannot be deleted (the FK's SET NULL is an UPDATE):
accounts are anonymised, never deleted (README).
"""

from django.db import migrations

from config import append_only

TABLE = "auditlog_logentry"


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_login_sessions"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [migrations.RunPython(append_only.forward(TABLE), append_only.reverse(TABLE))]
