"""The embedded default (SQLite) migrated from zero keeps the ledger append-only: its triggers
refuse an UPDATE and a DELETE of an entry (they were lost by a table rebuild until `credits`
0022 made them again)."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def test_a_sqlite_database_migrated_from_zero_refuses_to_change_an_entry(tmp_path: Path) -> None:
    database = tmp_path / "embedded.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SQLITE_PATH=str(database), DEBUG="1", CELERY_BROKER_URL="")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    with sqlite3.connect(database) as conn:  # foreign keys are off in a bare connection
        conn.execute(
            "INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,"
            " idempotency_key, reference, reason, created_at)"
            " VALUES ('a', 1, 'grant', 5, 5, 'k', '', '', '2026-12-07 00:00:00')"
        )
        with pytest.raises(sqlite3.DatabaseError, match="append-only: UPDATE"):
            conn.execute("UPDATE credits_ledgerentry SET amount = 6")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: DELETE"):
            conn.execute("DELETE FROM credits_ledgerentry")
