"""Spend controls and key rotation in the hot path (issue 18): `gateway_spend_check` (new), and
`gateway_authorize`, `gateway_authorize_check`, `gateway_hold_create` (the checks, the key's
live holds, the previous secret of a rotation) and `gateway_settle` (the spend counters). The
current text of `credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0006_usage_records_cursor_index"),
        ("accounts", "0008_apikey_spend_controls_and_rotation"),
        ("credits", "0013_account_monthly_limit"),
    ]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
