# Placeholder: usage aggregation (issue 7) fills in its operations here.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("credits", "0004_payments")]
    operations: list = []
