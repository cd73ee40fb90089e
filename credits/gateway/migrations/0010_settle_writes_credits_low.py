"""`credits.low` in the hot path (issue 17): `gateway_settle` writes the event row when its charge
crosses the account's low-balance threshold, and returns its id. The current text of
`credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0009_usage_records_no_key_index"),
        ("credits", "0017_lot_expiry_notice"),
    ]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
