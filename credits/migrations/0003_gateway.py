# Placeholder: the gateway hot path (issue 4) fills in its operations here.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("credits", "0002_ledger_append_only_and_seed")]
    operations: list = []
