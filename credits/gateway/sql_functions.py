"""The one current text of the gateway's SQL functions (`credits/gateway/sql/<name>.sql`, one
function per file, named by the file) and their installer.

The rule (README, "The gateway's SQL functions"): to change a function, edit its file and add a
gateway migration that calls `sql_functions_install` (`RunPython(sql_functions_forward, ...)`),
depending on every migration whose schema the new text needs. Every installing migration
installs the text the files hold *now*, so on a fresh database an early one installs a text
written for a later schema. That is safe because:

- bodies are not checked at creation (`check_function_bodies` off for the install, as pg_dump
  does): a PL/pgSQL body is only ever checked when it runs, and a `LANGUAGE sql` body, which
  PostgreSQL would otherwise check at once, is not checked either;
- no migration calls these functions, so none runs before `migrate` has finished;
- each install first drops every function of the file's name, so a changed argument list or
  result type replaces the old function (CREATE OR REPLACE refuses a new result type, and a
  new argument list would add a second function beside the old one). Nothing may therefore
  depend on these functions (no view, trigger or default names them).

`tests/gateway/test_sql_functions.py` checks that the functions in the database are exactly
the files' text.
"""

from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).resolve().parent / "sql"


def sql_function_texts() -> dict[str, str]:
    """Each function's name (its file's stem) and the file's text."""
    return {path.stem: path.read_text() for path in sorted(SQL_DIR.glob("*.sql"))}


def _drop(cursor: Any, name: str) -> None:
    cursor.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.proname = %s AND n.nspname = current_schema()",
        [name],
    )
    for (signature,) in cursor.fetchall():
        cursor.execute(f"DROP FUNCTION {signature}")


def sql_functions_install(schema_editor: Any) -> None:
    """Install the current text of every function (PostgreSQL only; SQLite runs the services)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT set_config('check_function_bodies', 'off', true)")
        for name, text in sql_function_texts().items():
            _drop(cursor, name)
            cursor.execute(text)
        cursor.execute("SELECT set_config('check_function_bodies', 'on', true)")


def sql_functions_drop(schema_editor: Any) -> None:
    """Drop every function the files name (the reverse of the first install)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name in sql_function_texts():
            _drop(cursor, name)


def sql_functions_forward(apps: Any, schema_editor: Any) -> None:
    sql_functions_install(schema_editor)
