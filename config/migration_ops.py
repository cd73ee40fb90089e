"""Constraints added safely on large tables, for the migrations of any app.

- `check_add`: the CHECK is added NOT VALID (no scan under the ACCESS EXCLUSIVE lock) and
  validated in a second statement, which takes only a SHARE UPDATE EXCLUSIVE lock, so reads and
  writes go on (the pattern of `credits` 0009).
- `unique_add`: the unique index is built CONCURRENTLY (writes go on), then attached as the
  constraint (`ADD CONSTRAINT ... UNIQUE USING INDEX`, instant).
- `UniqueDrop`: a UNIQUE constraint dropped waiting at most a few seconds for its lock (its
  reverse is `unique_add`'s build).

Both need the migration to be `atomic = False` (VALIDATE and CONCURRENTLY run outside the
ADD's transaction). SQLite re-creates the table, as Django does for any such change.

Indexes built and dropped without blocking writes (also `atomic = False`):

- `AddIndexLive`, `RemoveIndexLive`: Django's concurrent operations on PostgreSQL, the plain
  ones on SQLite (which has no concurrent form);
- `fk_index_drop`: a foreign key's own index dropped (`db_index=False`) CONCURRENTLY.
"""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class _ConcurrentOnPostgres:
    """The concurrent operation on PostgreSQL, its plain base (`plain`) elsewhere."""

    plain: Any

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, *args)  # type: ignore[misc]
        else:
            self.plain.database_forwards(self, app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, *args)  # type: ignore[misc]
        else:
            self.plain.database_backwards(self, app_label, schema_editor, *args)


class AddIndexLive(_ConcurrentOnPostgres, AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexLive(_ConcurrentOnPostgres, RemoveIndexConcurrently):
    plain = migrations.RemoveIndex


def fk_index_drop(
    app_label: str, model_name: str, name: str, field: models.ForeignKey[Any, Any]
) -> migrations.SeparateDatabaseAndState:
    """`AlterField(name, field)` where `field` is the foreign key as it was but with
    `db_index=False`: the state changes as Django's would; the database drops the index
    CONCURRENTLY on PostgreSQL (a plain DROP INDEX waits for every running transaction on the
    table while blocking all that come after it). The reverse builds it again, concurrently."""
    assert field.deconstruct()[3].get("db_index") is False

    def index_name(apps: Any, schema_editor: Any) -> tuple[str, str, str]:
        model = apps.get_model(app_label, model_name)
        column = model._meta.get_field(name).column
        table = model._meta.db_table
        return table, column, schema_editor._create_index_name(table, [column])

    def forward(apps: Any, schema_editor: Any) -> None:
        _, _, index = index_name(apps, schema_editor)
        concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
        schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {index}", None)

    def backward(apps: Any, schema_editor: Any) -> None:
        table, column, index = index_name(apps, schema_editor)
        concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
        schema_editor.execute(
            f"CREATE INDEX {concurrently}IF NOT EXISTS {index} ON {table} ({column})", None
        )

    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AlterField(model_name=model_name, name=name, field=field)],
        database_operations=[migrations.RunPython(forward, backward)],
    )


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


class UniqueDrop(migrations.RemoveConstraint):
    """`RemoveConstraint` of a UNIQUE constraint on a large table, without stalling its writes.

    On PostgreSQL, `ALTER TABLE ... DROP CONSTRAINT` needs the table's ACCESS EXCLUSIVE lock,
    held only for the instant of the catalogue change (the index's file is unlinked, nothing is
    scanned); while it waits for a running transaction, every statement after it waits too. So
    it waits at most `LOCK_TIMEOUT` and then fails, to be run again, rather than queueing the
    hot path behind a long report. The reverse builds the index CONCURRENTLY and attaches it
    (as `unique_add`): the migration must be `atomic = False`. SQLite drops it as Django does.
    """

    LOCK_TIMEOUT = "5s"

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        table = from_state.apps.get_model(app_label, self.model_name)._meta.db_table
        schema_editor.execute(f"SET lock_timeout = '{self.LOCK_TIMEOUT}'", None)
        try:
            schema_editor.execute(
                f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {self.name}", None
            )
        finally:
            schema_editor.execute("RESET lock_timeout", None)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if schema_editor.connection.vendor != "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        constraint = next(c for c in model._meta.constraints if c.name == self.name)
        table = model._meta.db_table
        columns = ", ".join(model._meta.get_field(f).column for f in constraint.fields)
        schema_editor.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {self.name} ON {table} ({columns})",
            None,
        )
        schema_editor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {self.name} UNIQUE USING INDEX {self.name}", None
        )
