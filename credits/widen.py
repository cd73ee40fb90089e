"""Widen integer columns to bigint on a live PostgreSQL table without a long lock (issue 15,
item 2: balances, lots and entry amounts past 2,147,483,647).

`ALTER COLUMN ... TYPE bigint` rewrites the whole table under an ACCESS EXCLUSIVE lock: on the
ledger, minutes to hours with every money operation waiting. Instead, per table:

1. add a nullable bigint twin of each column (catalogue only) and a trigger that keeps each twin
   equal to its column on every INSERT and UPDATE from then on;
2. copy the existing rows in batches, one short transaction each, in primary-key order;
3. copy every CHECK and index that names a column onto the twins (NOT VALID + VALIDATE, which
   lets writes go on; CREATE INDEX CONCURRENTLY), and prove the twins NOT NULL the same way;
4. in one short transaction (catalogue changes only): drop the old columns with what depended on
   them, rename the twins, their CHECKs and indexes to the old names, drop the trigger.

The ledger refuses UPDATE (append-only trigger); step 2 may update only the twins, and only in
a session that sets `billing.allow_ledger_widen = on`, which the copy does with SET LOCAL. The
function that allows it is the append-only function itself, redefined for the copy and put back
exactly as it was afterwards.

Written for this project's three money tables (`credits` 0010) and tested on a scratch table
(`tests/credits/test_widen.py`); a migration imports it, so keep it backwards compatible.
"""

import re
import time
from typing import Any

from django.db import OperationalError, transaction

SUFFIX = "__wide"
BATCH = 5000

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION credits_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND coalesce(current_setting('billing.allow_ledger_truncate', true), '') = 'on' THEN
        RETURN NULL;
    END IF;{widen}
    RAISE EXCEPTION 'credits_ledgerentry is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
"""

# During a widening only: an UPDATE that changes nothing but the bigint twins.
WIDEN_BYPASS = """
    IF TG_OP = 'UPDATE'
       AND coalesce(current_setting('billing.allow_ledger_widen', true), '') = 'on' THEN
        RETURN NEW;
    END IF;"""


def append_only_allow_widen(cursor: Any, allow: bool) -> None:
    cursor.execute(APPEND_ONLY.format(widen=WIDEN_BYPASS if allow else ""))


def _dependents(cursor: Any, table: str, columns: list[str]) -> tuple[list[Any], list[Any]]:
    """The CHECK constraints and indexes (but the primary key) that name any of `columns`."""
    cursor.execute(
        """
        SELECT DISTINCT c.conname, pg_get_constraintdef(c.oid)
          FROM pg_constraint c JOIN pg_attribute a
            ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
         WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND a.attname = ANY (%s)
         ORDER BY 1
        """,
        [table, columns],
    )
    checks = cursor.fetchall()
    cursor.execute(
        """
        SELECT DISTINCT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_depend d
            ON d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND a.attname = ANY (%s)
         ORDER BY 1
        """,
        [table, columns],
    )
    return checks, cursor.fetchall()


def _on_twins(text: str, columns: list[str]) -> str:
    for column in columns:
        text = re.sub(rf'(?<![\w"]){column}(?![\w"])', f"{column}{SUFFIX}", text)
    return text


def widen_columns(connection: Any, table: str, pk: str, columns: list[str]) -> None:
    """Turn `columns` of `table` (integer, NOT NULL) into bigint, keeping their CHECKs and
    indexes under the same names. Runs outside any transaction (its own short ones)."""
    assert not connection.in_atomic_block, "widen_columns makes its own transactions"
    twins = [f"{c}{SUFFIX}" for c in columns]
    ledger = table == "credits_ledgerentry"
    trigger = f"{table}_widen"
    with connection.cursor() as cursor:
        checks, indexes = _dependents(cursor, table, columns)
        for name, _ in [*checks, *indexes]:
            assert len(f"{name}{SUFFIX}") <= 63, f"{name}: too long for a twin's name"
        with transaction.atomic(using=connection.alias):
            cursor.execute("SET LOCAL lock_timeout = '10s'")
            cursor.execute(
                f"ALTER TABLE {table} "
                + ", ".join(f"ADD COLUMN IF NOT EXISTS {twin} bigint" for twin in twins)
            )
            copy = " ".join(f"NEW.{t} := NEW.{c};" for t, c in zip(twins, columns, strict=True))
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN {copy} RETURN NEW; END; $$"
            )
            cursor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            cursor.execute(
                f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"
            )
            if ledger:
                append_only_allow_widen(cursor, allow=True)

        # 2. Copy the rows that were there before the trigger, a batch per transaction.
        last: Any = None
        while True:
            done = _copy_batch(connection, cursor, table, pk, columns, twins, last, ledger)
            if not done:
                break
            last = max(done)
        if ledger:
            append_only_allow_widen(cursor, allow=False)

        # 3. The same CHECKs and indexes on the twins, and the twins proven NOT NULL, without
        # blocking writes (NOT VALID, then VALIDATE; CONCURRENTLY).
        not_null = [f"{table}_{twin}_nn"[:63] for twin in twins]
        for name, twin in zip(not_null, twins, strict=True):
            _add_check(cursor, table, name, f"CHECK ({twin} IS NOT NULL)")
        for name, definition in checks:
            _add_check(cursor, table, f"{name}{SUFFIX}", _on_twins(definition, columns))
        for name, definition in indexes:
            twin_index = f"{name}{SUFFIX}"
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {twin_index}")
            twin_def = _on_twins(definition, columns)
            twin_def = twin_def.replace(f"INDEX {name} ON", f"INDEX CONCURRENTLY {twin_index} ON")
            cursor.execute(twin_def)

        # 4. The swap: catalogue changes only, under one short lock.
        with transaction.atomic(using=connection.alias):
            cursor.execute("SET LOCAL lock_timeout = '10s'")
            cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            for twin, name in zip(twins, not_null, strict=True):
                cursor.execute(f"ALTER TABLE {table} ALTER COLUMN {twin} SET NOT NULL")
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            cursor.execute(f"DROP TRIGGER {trigger} ON {table}")
            cursor.execute(f"DROP FUNCTION {trigger}()")
            for column, twin in zip(columns, twins, strict=True):
                cursor.execute(f"ALTER TABLE {table} DROP COLUMN {column} CASCADE")
                cursor.execute(f"ALTER TABLE {table} RENAME COLUMN {twin} TO {column}")
            for name, _ in checks:
                cursor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {name}{SUFFIX} TO {name}")
            for name, _ in indexes:
                cursor.execute(f"ALTER INDEX {name}{SUFFIX} RENAME TO {name}")


def _copy_batch(
    connection: Any,
    cursor: Any,
    table: str,
    pk: str,
    columns: list[str],
    twins: list[str],
    last: Any,
    ledger: bool,
) -> list[Any]:
    """Copy one batch after `last`; a deadlock with a live money operation (which locks rows in
    its own order) or a lock timeout is retried: the batch is idempotent."""
    after = "" if last is None else f"WHERE {pk} > %s"
    # Table and column names are this module's callers' constants, never input.
    assignments = ", ".join(f"{tw} = t.{c}" for tw, c in zip(twins, columns, strict=True))
    sql = (
        f"WITH batch AS (SELECT {pk} FROM {table} {after} ORDER BY {pk} LIMIT {BATCH})"  # noqa: S608
        f" UPDATE {table} t SET {assignments}"
        f" FROM batch WHERE t.{pk} = batch.{pk} RETURNING t.{pk}"
    )
    for attempt in range(5):
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute("SET LOCAL lock_timeout = '2s'")
                if ledger:
                    cursor.execute("SET LOCAL billing.allow_ledger_widen = on")
                cursor.execute(sql, [] if last is None else [last])
                return [row[0] for row in cursor.fetchall()]
        except OperationalError:
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _add_check(cursor: Any, table: str, name: str, definition: str) -> None:
    cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID")
    cursor.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
