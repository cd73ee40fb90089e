"""`gateway_settle_batch` (new): `POST /internal/v1/settle/batch` in one round trip, each item
settled by the unchanged `gateway_settle`. The current text of `credits/gateway/sql/*.sql`,
installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [("gateway", "0007_spend_controls")]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
