# Placeholder: packages, purchases and Stripe events (issue 5) fill in their operations here.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("credits", "0003_gateway")]
    operations: list = []
