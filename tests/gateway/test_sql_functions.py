"""The gateway's SQL functions installed in the database are exactly the text of their files
(`credits/gateway/sql/*.sql`): each file is created again in a scratch schema and PostgreSQL's
own rendering of both definitions is compared, so formatting, comments and whitespace inside
the body count, and no function of the files' names exists that no file defines."""

from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from credits.gateway.sql_functions import sql_function_texts

pytestmark = pytest.mark.django_db

SCRATCH = "gateway_sql_check"


def _definitions(cursor: object, schema: str) -> dict[str, list[str]]:
    cursor.execute(  # type: ignore[attr-defined]
        "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.proname = ANY(%s) ORDER BY 1, 2",
        [schema, list(sql_function_texts())],
    )
    found: dict[str, list[str]] = {}
    for name, definition in cursor.fetchall():  # type: ignore[attr-defined]
        # The rendering names the schema: compare without it.
        found.setdefault(name, []).append(definition.replace(f"{schema}.", "", 1))
    return found


def sql_functions_drift() -> list[str]:
    """The names whose installed definition differs from the file (or is missing, or has a
    second overload beside it)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (installed_schema,) = cursor.fetchone()
        installed = _definitions(cursor, installed_schema)
        sid = transaction.savepoint()
        cursor.execute(f"CREATE SCHEMA {SCRATCH}")
        cursor.execute(f"SET LOCAL search_path = {SCRATCH}")
        for text in sql_function_texts().values():
            cursor.execute(text)
        expected = _definitions(cursor, SCRATCH)
        transaction.savepoint_rollback(sid)
    names = sorted(set(installed) | set(expected) | set(sql_function_texts()))
    return [name for name in names if installed.get(name) != expected.get(name)]


@pytest.fixture
def postgres_only() -> Iterator[None]:
    if connection.vendor != "postgresql":
        pytest.skip("the SQL functions exist on PostgreSQL only")
    yield


def test_every_file_defines_one_function_of_its_own_name() -> None:
    texts = sql_function_texts()
    assert set(texts) == {
        "gateway_authorize",
        "gateway_authorize_check",
        "gateway_hold_create",
        "gateway_spend_check",
        "gateway_settle",
        "gateway_settle_batch",
    }
    for name, text in texts.items():
        assert text.count(" FUNCTION ") == 1
        assert f"FUNCTION {name}(" in text


def test_the_installed_functions_are_exactly_the_files(postgres_only: None) -> None:
    assert sql_functions_drift() == []


def test_a_function_changed_in_the_database_is_told_apart_from_its_file(
    postgres_only: None,
) -> None:
    text = sql_function_texts()["gateway_settle"]
    with connection.cursor() as cursor:
        cursor.execute(text.replace("RETURN NEXT;\nEND;", "RETURN NEXT;\n    RETURN;\nEND;"))
    assert sql_functions_drift() == ["gateway_settle"]


def test_a_second_overload_beside_a_file_is_drift(postgres_only: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION gateway_hold_create(p integer) RETURNS integer"
            " LANGUAGE sql AS 'SELECT 1'"
        )
    assert sql_functions_drift() == ["gateway_hold_create"]
