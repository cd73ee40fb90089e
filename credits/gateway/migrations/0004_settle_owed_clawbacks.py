"""`gateway_settle` and owed claw-backs: a commit caps what a lot owes at the credits still held
(a spent credit cannot be taken back), and a release on a lot that owes anything answers `due`
before any write, so `credits.services._release_hold` takes the released credit. The current
text of `credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0003_settle_answers_due"),
        ("credits", "0009_lot_clawback_owed"),
    ]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
