"""Constraints added safely on large tables, for the migrations of any app.

- `check_add`: the CHECK is added NOT VALID (no scan under the ACCESS EXCLUSIVE lock) and
  validated in a second statement, which takes only a SHARE UPDATE EXCLUSIVE lock, so reads and
  writes go on (the pattern of `credits` 0009).
- `unique_add`: the unique index is built CONCURRENTLY (writes go on), then attached as the
  constraint (`ADD CONSTRAINT ... UNIQUE USING INDEX`, instant).

Both need the migration to be `atomic = False` (VALIDATE and CONCURRENTLY run outside the
ADD's transaction). SQLite re-creates the table, as Django does for any such change.
"""

from typing import Any

from django.db import migrations, models


def _operation(
    app_label: str, model_name: str, constraint: Any, forward: Any
) -> migrations.SeparateDatabaseAndState:

    def backward(apps: Any, schema_editor: Any) -> None:
        schema_editor.remove_constraint(apps.get_model(app_label, model_name), constraint)

    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddConstraint(model_name=model_name, constraint=constraint)],
        database_operations=[migrations.RunPython(forward, backward)],
    )


def check_add(
    app_label: str, model_name: str, table: str, constraint: models.CheckConstraint
) -> migrations.SeparateDatabaseAndState:
    def forward(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        if schema_editor.connection.vendor == "postgresql":
            sql = constraint.constraint_sql(model, schema_editor)  # "CONSTRAINT name CHECK (...)"
            schema_editor.execute(f"ALTER TABLE {table} ADD {sql} NOT VALID", None)
            schema_editor.execute(
                f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint.name}", None
            )
        else:
            schema_editor.add_constraint(model, constraint)

    return _operation(app_label, model_name, constraint, forward)


def unique_add(
    app_label: str, model_name: str, table: str, column: str, name: str
) -> migrations.SeparateDatabaseAndState:
    constraint = models.UniqueConstraint(fields=[column], name=name)

    def forward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({column})",
                None,
            )
            schema_editor.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}", None
            )
        else:
            schema_editor.add_constraint(apps.get_model(app_label, model_name), constraint)

    return _operation(app_label, model_name, constraint, forward)
