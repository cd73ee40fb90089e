"""Append-only tables guarded in the database: the SQL that makes a table refuse UPDATE and
DELETE (and, on PostgreSQL, TRUNCATE unless the session set `billing.allow_ledger_truncate = on`,
which only the test settings do, for Django's test flush). For migrations: `forward(table)` and
`reverse(table)` give RunPython functions. The ledger's own migration
(credits/migrations/0002) predates this module and keeps its SQL inline: migrations are history.
"""

from collections.abc import Callable
from typing import Any


def _pg_forward(table: str) -> list[str]:
    return [
        f"""
CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND coalesce(current_setting('billing.allow_ledger_truncate', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '{table} is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER {table}_no_update_delete
    BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {table}_append_only();
CREATE TRIGGER {table}_no_truncate
    BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only();
"""
    ]


def _pg_reverse(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table}",
        f"DROP FUNCTION IF EXISTS {table}_append_only()",
    ]


def _sqlite_forward(table: str) -> list[str]:
    return [
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
       BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} is not allowed'); END"""
        for op in ("UPDATE", "DELETE")
    ]


def _sqlite_reverse(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {table}_no_{op}" for op in ("update", "delete")]


def _runner(
    table: str, pg: Callable[[str], list[str]], sqlite: Callable[[str], list[str]]
) -> Callable[[Any, Any], None]:
    def run(apps: Any, schema_editor: Any) -> None:
        vendor = schema_editor.connection.vendor
        statements = {"postgresql": pg, "sqlite": sqlite}.get(vendor, lambda _: [])(table)
        for sql in statements:
            schema_editor.execute(sql, None)

    return run


def forward(table: str) -> Callable[[Any, Any], None]:
    return _runner(table, _pg_forward, _sqlite_forward)


def reverse(table: str) -> Callable[[Any, Any], None]:
    return _runner(table, _pg_reverse, _sqlite_reverse)
