"""`gateway_settle` answers `due` (one word with the other functions, `Outcome.DUE`) where it
answered `fallback`: the current text of `credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [("gateway", "0002_sql_functions")]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
