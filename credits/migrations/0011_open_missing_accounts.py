"""Open the credit account of every user that has none (superusers made by `createsuperuser`
and users added in the admin before the `post_save` receiver in credits/receivers.py existed).

Inserts only, in batches, so no long lock is taken on either table; `ignore_conflicts` makes it
safe against a registration opening the same account meanwhile. The reverse does nothing: an
empty account is harmless and may already have entries.
"""

from typing import Any

from django.db import migrations

BATCH = 1000


def open_missing_accounts(apps: Any, schema_editor: Any) -> None:
    user_model = apps.get_model("accounts", "User")
    account_model = apps.get_model("credits", "CreditAccount")
    missing = user_model.objects.filter(credit_account__isnull=True).values_list("pk", flat=True)
    while True:
        batch = list(missing[:BATCH])
        if not batch:
            return
        account_model.objects.bulk_create(
            [account_model(user_id=pk) for pk in batch], ignore_conflicts=True
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_existing_users_verified"),
        ("credits", "0010_sixty_four_bit_amounts"),
    ]

    operations = [migrations.RunPython(open_missing_accounts, migrations.RunPython.noop)]
