"""The conversion of a populated usage table to partitions (migration gateway 0015), on a
database of its own: the test database was converted while empty, and the case that matters is
a table with rows, ids and buckets already written."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent.parent

BEFORE = """
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
call_command("migrate", "gateway", "0014_usage_records_request_id_not_unique", verbosity=0)
for label in sorted(MigrationLoader(connection).migrated_apps - {"gateway"}):
    call_command("migrate", label, verbosity=0)
from tests.factories import registered_user
print(registered_user().pk)
"""

INSERT = (
    "INSERT INTO credits_usagerecord (request_id, account_id, model, prompt_tokens,"
    " completion_tokens, outcome, reason, http_status, charged, settled_at)"
    " VALUES (%s, %s, 'm', 2, 3, 'success', '', 200, 1, now() - %s::interval) RETURNING id"
)


@pytest.fixture
def scratch() -> Iterator[str]:
    if connection.vendor != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    settings = connection.settings_dict
    name = f"{settings['NAME']}_convert"
    base = f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT'] or 5432}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _manage(url: str, *args: str) -> str:
    env = dict(os.environ, DATABASE_URL=url, DEBUG="1", REDIS_URL="", CELERY_BROKER_URL="")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _one(conn: Any, sql: str, params: list[Any] | None = None) -> Any:
    row = conn.execute(sql, params or []).fetchone()
    return row[0] if row else None


def test_a_populated_table_becomes_the_first_partition_with_its_rows_ids_and_buckets(
    scratch: str,
) -> None:
    account = _manage(scratch, "shell", "-c", BEFORE).split()[-1]
    with psycopg.connect(scratch, autocommit=True) as conn:
        old_ids = [_one(conn, INSERT, [f"old-{n}", account, f"{n} days"]) for n in (1, 40, 400)]
        requests_before = _one(conn, "SELECT sum(requests) FROM credits_usagebucket")

    _manage(scratch, "migrate", "gateway", "0015", "-v0")

    with psycopg.connect(scratch, autocommit=True) as conn:
        assert (
            _one(conn, "SELECT relkind FROM pg_class WHERE relname = 'credits_usagerecord'") == "p"
        )
        homes = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM credits_usagerecord GROUP BY 1"
        ).fetchall()
        assert homes == [("credits_usagerecord_legacy", 3)]
        new_id = _one(conn, INSERT, ["new", account, "0 days"])
        assert new_id > max(old_ids)  # the ids go on from the old sequence
        # The bucket trigger fired once for the new row, as before the conversion.
        assert _one(conn, "SELECT sum(requests) FROM credits_usagebucket") == requests_before + 1
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(INSERT, ["orphan", "00000000-0000-0000-0000-000000000000", "0 days"])
        assert (
            _one(conn, "SELECT count(*) FROM pg_constraint WHERE conname = 'usage_legacy_range'")
            == 0
        )
    # Django's own view of the table: nothing left to migrate, the model reads every row.
    out = _manage(scratch, "migrate", "-v0")
    assert out == ""
    count = _manage(
        scratch,
        "shell",
        "-c",
        "from credits.gateway.models import UsageRecord; print(UsageRecord.objects.count())",
    )
    assert count.split()[-1] == "4"
