"""The hot path's functions with bigint balances and results, for the 64-bit ledger of `credits`
0010: the current text of `credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0004_settle_owed_clawbacks"),
        ("credits", "0010_sixty_four_bit_amounts"),
    ]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
