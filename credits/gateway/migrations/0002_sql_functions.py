"""The hot path's SQL functions, installed from their one current text in
`credits/gateway/sql/*.sql` (see `credits/gateway/sql_functions.py` for the rule a later change
follows: edit the file, add a migration that calls the same installer).

On a database migrated before this app existed, the functions that `credits` 0003 and 0007
created are replaced by the same text; on a fresh database `credits` 0003 and 0007 create none
and this migration creates them. The reverse drops them, as before `credits` 0003.
"""

from typing import Any

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_drop, sql_functions_forward


def drop(apps: Any, schema_editor: Any) -> None:
    sql_functions_drop(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("gateway", "0001_initial")]

    operations = [migrations.RunPython(sql_functions_forward, drop)]
