"""Store every email as `accounts.models.normalize_email` gives it (NFKC, then lower-case).

Rows were stored lower-cased only, and login now looks up the normalized form by exact match,
so a row holding a compatibility character (`ſ`, full-width letters in an IDN domain, ...)
would no longer be found. Such a row is rewritten when its normalized address is free. When
another row already holds it (a look-alike registered next to its original while login still
compared with PostgreSQL's UPPER()), the row is left as it is and named on stderr: the two are
one address now, the original keeps it, and staff decide about the other account.
"""

import sys
import unicodedata
from typing import Any

from django.db import migrations


def _normalize(email: str) -> str:
    # A frozen copy of accounts.models.normalize_email as of this migration.
    return unicodedata.normalize("NFKC", email or "").strip().lower()


def normalize_emails(apps: Any, schema_editor: Any) -> None:
    User = apps.get_model("accounts", "User")
    for pk, email in User.objects.values_list("pk", "email").iterator():
        normalized = _normalize(email)
        if normalized == email:
            continue
        if User.objects.filter(email=normalized).exists():
            sys.stderr.write(
                f"accounts.0003: user {pk} left as is: its email normalizes to one another "
                "user holds\n"
            )
            continue
        User.objects.filter(pk=pk).update(email=normalized)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_apikey_lean_indexes"),
    ]

    operations = [
        migrations.RunPython(normalize_emails, migrations.RunPython.noop, elidable=True),
    ]
