"""The usage records' conversion to monthly partitions on a large table: how long each step
takes and how long a concurrent settle-like insert waits (migration gateway 0015).

    .venv/bin/python bench/partitions.py                    # 3,000,000 rows
    .venv/bin/python bench/partitions.py --rows 500000 --database billing_partitions_me

In its own scratch PostgreSQL database (`--database`, dropped and re-created, migrated up to
the migration before the conversion, dropped again at the end unless `--keep`): `--rows`
usage records over the last 150 days (inserted with the bucket trigger off: the conversion
does not read the buckets), then, while one connection inserts a record every 5 ms through
the table's name (as the settle does), the conversion's two steps as the migration runs them:
the CHECK added NOT VALID and validated (no lock that blocks inserts), and the switch (one
transaction under ACCESS EXCLUSIVE). Prints each step's time, the table's size, and the
writer's slowest and median insert. Not part of the test suite.
"""

import argparse
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--database", default="billing_partitions", help="dropped and re-created")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


MIGRATE = """
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
call_command("migrate", "gateway", "0011_settle_auto_topup", verbosity=0)
for label in sorted(MigrationLoader(connection).migrated_apps - {"gateway"}):
    call_command("migrate", label, verbosity=0)
from tests.factories import registered_user
registered_user()
"""


def migrate_before_conversion(database: str) -> None:
    """Every migration but the conversion and what comes after it; one user and account."""
    env = dict(os.environ)
    env.update(DATABASE_URL=f"{PG}/{database}", DEBUG="1", REDIS_URL="", CELERY_BROKER_URL="")
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", MIGRATE], cwd=ROOT, env=env, check=True
    )


def fill(conn: Any, rows: int) -> str:
    account = conn.execute("SELECT user_id FROM credits_creditaccount LIMIT 1").fetchone()
    if account is None:
        raise SystemExit("no account: create one user first")
    conn.execute("ALTER TABLE credits_usagerecord DISABLE TRIGGER credits_usagerecord_bucket")
    conn.execute(
        """
        INSERT INTO credits_usagerecord (request_id, account_id, model, prompt_tokens,
            completion_tokens, outcome, reason, http_status, charged, settled_at)
        SELECT 'req_fill_' || g, %s, 'kimi-k2-0905', 25, 189, 'success', '', 200, 1,
               now() - interval '150 days' + g * (interval '150 days' / %s)
          FROM generate_series(1, %s) g
        """,
        [account[0], rows, rows],
    )
    conn.execute("ALTER TABLE credits_usagerecord ENABLE TRIGGER credits_usagerecord_bucket")
    conn.execute("VACUUM ANALYZE credits_usagerecord")
    return str(account[0])


def main() -> None:
    import psycopg

    from credits.gateway import partitions

    args = parse_args()
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {args.database}")
    url = f"{PG}/{args.database}"
    try:
        migrate_before_conversion(args.database)
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            account = fill(conn, args.rows)
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('credits_usagerecord'))"
            ).fetchone()
            print(f"filled {args.rows:,} rows ({size[0]}) in {time.perf_counter() - started:.0f} s")
        latencies: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                n = 0
                while not stop.is_set():
                    n += 1
                    began = time.perf_counter()
                    conn.execute(
                        "INSERT INTO credits_usagerecord (request_id, account_id, model,"
                        " prompt_tokens, completion_tokens, outcome, reason, http_status,"
                        " charged, settled_at)"
                        " VALUES (%s, %s, 'm', 1, 1, 'success', '', 200, 1, now())",
                        [f"writer-{n}", account],
                    )
                    latencies.append(time.perf_counter() - began)
                    time.sleep(0.005)

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(1)
        now = datetime.now(UTC)
        bound = partitions.legacy_bound(now)
        with psycopg.connect(url, autocommit=True) as conn:
            began = time.perf_counter()
            partitions.convert_prepare(conn.cursor(), bound)
            prepared = time.perf_counter()
            with conn.transaction():
                partitions.convert_switch(conn.cursor(), bound, now)
            switched = time.perf_counter()
        time.sleep(1)
        stop.set()
        thread.join()
        latencies.sort()
        print(f"step 1, CHECK NOT VALID + VALIDATE (inserts go on): {prepared - began:.2f} s")
        print(
            f"step 2, the switch under ACCESS EXCLUSIVE (until commit): "
            f"{1000 * (switched - prepared):.0f} ms"
        )
        print(
            f"writer: {len(latencies)} inserts, slowest {1000 * latencies[-1]:.0f} ms, "
            f"median {1000 * latencies[len(latencies) // 2]:.1f} ms, none failed"
        )
    finally:
        if not args.keep:
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")


if __name__ == "__main__":
    main()
