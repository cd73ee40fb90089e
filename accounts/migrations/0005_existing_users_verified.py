"""Users registered before email verification existed got their signup grant at registration:
they count as verified and confirmed, and their mailboxes as claimed, so none of them (nor a
new account of the same mailbox) is granted the signup credits a second time.

Non-atomic and in batches of 1,000 rows, each its own short transaction: no long lock on a large
user table. Safe to run again (it touches only rows still unconfirmed).
"""

import hashlib
import unicodedata
from typing import Any

from django.db import migrations, transaction
from django.db.models import F

BATCH = 1000


def _mailbox_digest(email: str) -> str:
    # A frozen copy of accounts.models.mailbox_of as of this migration.
    local, at, domain = unicodedata.normalize("NFKC", email or "").strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in {"gmail.com", "googlemail.com"}:
        local, domain = local.replace(".", ""), "gmail.com"
    mailbox = f"{local}@{domain}" if at else domain
    return hashlib.sha256(mailbox.encode("utf-8", "surrogatepass")).hexdigest()


def confirm_existing(apps: Any, schema_editor: Any) -> None:
    User = apps.get_model("accounts", "User")
    MailboxClaim = apps.get_model("accounts", "MailboxClaim")
    while True:
        rows = list(
            User.objects.filter(signup_confirmed_at__isnull=True).values_list("pk", "email")[:BATCH]
        )
        if not rows:
            return
        with transaction.atomic():
            MailboxClaim.objects.bulk_create(
                [MailboxClaim(mailbox_digest=_mailbox_digest(email)) for _, email in rows],
                ignore_conflicts=True,
            )
            User.objects.filter(pk__in=[pk for pk, _ in rows]).update(
                email_verified_at=F("date_joined"), signup_confirmed_at=F("date_joined")
            )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0004_public_accounts"),
    ]

    operations = [
        migrations.RunPython(confirm_existing, migrations.RunPython.noop, elidable=True),
    ]
