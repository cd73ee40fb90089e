"""Auto top-up in the hot path (issue 19): `gateway_settle` stamps the account whose charge
takes its balance below its auto top-up threshold, and names it in a new result column. The
current text of `credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0007_spend_controls"),
        ("credits", "0016_account_auto_topup"),
    ]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
