"""Issue 23 (bytes per request): the authorize functions keep on the hold what its answer is
rebuilt from (`credits.gateway.decisions.AnswerShape`, credits `0021`) instead of the answer
as JSON, and answer a replay from those columns (or from the stored answer of a hold written
before); the settle keeps its answer's credits in `settled_available`. The current text of
`credits/gateway/sql/*.sql`, installed again."""

from django.db import migrations

from credits.gateway.sql_functions import sql_functions_forward


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0012_usagebucket_hour"),
        ("credits", "0021_hold_answer_columns"),
    ]

    operations = [migrations.RunPython(sql_functions_forward, migrations.RunPython.noop)]
