"""Benchmark of the reconciliations (issue 23): the full one and the incremental one, on a
ledger of 10 million entries and a day of new ones.

Seeds, by bulk SQL (`generate_series`, in chunks), `--accounts` accounts each with one lot and
`--entries` entries in all, interleaved across the accounts as live traffic is: each account's
first entry is its grant, the rest are charges of 1 credit, each with its committed hold and a
running `balance_after`; the accounts' and lots' caches agree. Then:

1. the first incremental run: no checkpoint yet, so it reads the whole ledger and checkpoints it;
2. "a day": `--day-share` of the ledger again as new charges (and their holds) on a tenth of
   the accounts, plus 1,000 live holds, caches kept right;
3. timed, interleaved (A, B, A, B: the machine is shared): the incremental run without moving
   the checkpoints, and the full run; then the nightly run itself (incremental, advancing);
4. prints each time, the ratio, and what each read; drops the database.

Needs PostgreSQL and about 6 GB of disk at 10 million entries. Runs in its own throwaway
database (`<DATABASE_URL's name>_reconcile_bench`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/billing_recon \\
        .venv/bin/python bench/reconcile.py [--entries 10000000] [--accounts 100000]
        [--day-share 0.01] [--rounds 2] [--keep]
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
# Seeding statements run for minutes; the web's 30 s bound is not theirs.
os.environ.setdefault("DB_STATEMENT_TIMEOUT_MS", "0")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from credits.reconciliation import reconcile  # noqa: E402
from credits.reconciliation_incremental import reconcile_incremental  # noqa: E402

GRANT = 1_000_000_000
CHUNK = 1_000_000
LIVE_HOLDS = 1_000

USERS = """
INSERT INTO accounts_user (id, password, is_superuser, email, invite_code, is_active, is_staff,
                           date_joined, pending_email)
SELECT md5('u' || a)::uuid, '!', false, 'bench-' || a || '@example.com',
       substr(md5('i' || a), 1, 16), true, false, now(), ''
  FROM generate_series(0, %(accounts)s - 1) AS a
"""

# Caches as the seeded entries leave them (`n` entries per account: a grant, n - 1 charges).
ACCOUNTS = """
INSERT INTO credits_creditaccount (user_id, balance, reserved, consumed, frozen_reason,
                                   month_spent, low_balance_threshold)
SELECT md5('u' || a)::uuid, %(grant)s - (%(n)s - 1), 0, %(n)s - 1, '', 0, 10
  FROM generate_series(0, %(accounts)s - 1) AS a
"""

LOTS = """
INSERT INTO credits_lot (id, account_id, source, package, created_at, clawback_claimed,
                         clawback_owed, clawback_uncollectable, granted, remaining, reserved)
SELECT a + 1, md5('u' || a)::uuid, 'purchase', '', now(), 0, 0, 0, %(grant)s,
       %(grant)s - (%(n)s - 1), 0
  FROM generate_series(0, %(accounts)s - 1) AS a
"""

# Entry i is the k-th entry of account a: ids interleave the accounts, as traffic does.
SERIES = """
SELECT i, a, k, md5('u' || a)::uuid AS account_id, a + 1 AS lot_id,
       md5('h' || i)::uuid AS hold_id, now() - (%(last)s - i) * interval '10 ms' AS at
  FROM (SELECT i, {a} AS a, {k} AS k FROM generate_series(%(lo)s, %(hi)s) AS i) s
"""
SEED_SERIES = SERIES.format(a="(i - 1) %% %(accounts)s", k="(i - 1) / %(accounts)s + 1")
# The day's entries: a tenth of the accounts (every tenth), each continuing its chain.
DAY_SERIES = SERIES.format(
    a="((i - %(first)s) %% %(active)s) * 10",
    k="%(n)s + (i - %(first)s) / %(active)s + 1",
)

ENTRIES = """
INSERT INTO credits_ledgerentry (id, account_id, lot_id, kind, amount, balance_after,
                                 idempotency_key, reference, reason, created_at)
SELECT i, account_id, lot_id, CASE WHEN k = 1 THEN 'grant' ELSE 'charge' END,
       CASE WHEN k = 1 THEN %(grant)s ELSE -1 END, %(grant)s - (k - 1),
       CASE WHEN k = 1 THEN 'grant:' || a ELSE 'charge:' || hold_id::text END, '', '', at
  FROM ({series}) s
"""

HOLDS = """
INSERT INTO credits_hold (id, request_id, amount, status, charged, created_at, expires_at,
                          settled_at, account_id, lot_id)
SELECT hold_id, 'r' || i, 1, 'committed', 1, at, at + interval '11 minutes', at, account_id,
       lot_id
  FROM ({series}) s WHERE k > 1
"""

DAY_CACHES = """
UPDATE credits_creditaccount SET balance = balance - %(d)s, consumed = consumed + %(d)s
 WHERE user_id IN (SELECT md5('u' || a)::uuid FROM generate_series(0, %(accounts)s - 1, 10) a);
UPDATE credits_lot SET remaining = remaining - %(d)s
 WHERE id IN (SELECT a + 1 FROM generate_series(0, %(accounts)s - 1, 10) a);
"""

LIVE = """
INSERT INTO credits_hold (id, request_id, amount, status, charged, created_at, expires_at,
                          account_id, lot_id)
SELECT md5('live' || a)::uuid, 'live-' || a, 1, 'live', 0, now(), now() + interval '10 min',
       md5('u' || a)::uuid, a + 1
  FROM generate_series(1, %(live)s) AS a;
UPDATE credits_creditaccount SET reserved = reserved + 1
 WHERE user_id IN (SELECT md5('u' || a)::uuid FROM generate_series(1, %(live)s) a);
UPDATE credits_lot SET reserved = reserved + 1
 WHERE id IN (SELECT a + 1 FROM generate_series(1, %(live)s) a);
"""


def execute(sql: str, **params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def chunked(label: str, start: int, last: int, sqls: list[str], **params: Any) -> None:
    started = time.monotonic()
    for lo in range(start, last + 1, CHUNK):
        hi = min(lo + CHUNK - 1, last)
        for sql in sqls:
            execute(sql, lo=lo, hi=hi, last=last, grant=GRANT, **params)
        print(f"  {label}: {hi - start + 1:,} ({time.monotonic() - started:.0f} s)", flush=True)


def seed(entries: int, accounts: int) -> None:
    n = entries // accounts
    started = time.monotonic()
    # Bulk load: no foreign-key triggers (every reference is made right here).
    execute("SET session_replication_role = replica")
    execute(USERS, accounts=accounts)
    execute(ACCOUNTS, accounts=accounts, grant=GRANT, n=n)
    execute(LOTS, accounts=accounts, grant=GRANT, n=n)
    series = SEED_SERIES
    chunked(
        "entries and holds",
        1,
        entries,
        [ENTRIES.format(series=series), HOLDS.format(series=series)],
        accounts=accounts,
    )
    execute("SET session_replication_role = DEFAULT")
    execute("SELECT setval(pg_get_serial_sequence('credits_lot', 'id'), %(v)s)", v=accounts)
    execute("SELECT setval(pg_get_serial_sequence('credits_ledgerentry', 'id'), %(v)s)", v=entries)
    execute("VACUUM ANALYZE")
    print(f"seeded in {time.monotonic() - started:.0f} s; {sizes()}", flush=True)


def add_day(entries: int, accounts: int, share: float) -> int:
    n = entries // accounts
    active = accounts // 10
    day = int(entries * share) // active * active
    per_account = day // active
    execute("SET session_replication_role = replica")
    series = DAY_SERIES
    chunked(
        "the day's entries and holds",
        entries + 1,
        entries + day,
        [ENTRIES.format(series=series), HOLDS.format(series=series)],
        first=entries + 1,
        active=active,
        n=n,
    )
    execute("SET session_replication_role = DEFAULT")
    for sql in (*DAY_CACHES.split(";"), *LIVE.split(";")):
        if sql.strip():
            execute(sql, d=per_account, accounts=accounts, live=LIVE_HOLDS)
    execute(
        "SELECT setval(pg_get_serial_sequence('credits_ledgerentry', 'id'), %(v)s)",
        v=entries + day,
    )
    execute("ANALYZE")
    print(f"a day: {day:,} entries on {active:,} accounts, {LIVE_HOLDS:,} live holds", flush=True)
    return day


def sizes() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database())),"
            " pg_size_pretty(pg_total_relation_size('credits_ledgerentry')),"
            " pg_size_pretty(pg_total_relation_size('credits_hold'))"
        )
        database, ledger, holds = cursor.fetchone()
    return f"database {database} (entries {ledger}, holds {holds})"


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--day-share", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved incremental/full")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    assert args.entries % args.accounts == 0 and args.accounts % 10 == 0

    if connection.vendor != "postgresql":
        sys.exit("bench/reconcile.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    setup_test_environment()
    base = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{base}_reconcile_bench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        seed(args.entries, args.accounts)
        elapsed, first = timed(reconcile_incremental)
        assert first.found == [], first.found[:5]
        print(
            f"first incremental run (no checkpoints: reads everything): {elapsed:.1f} s; "
            f"{first.summary()}",
            flush=True,
        )
        add_day(args.entries, args.accounts, args.day_share)
        incremental: list[float] = []
        full: list[float] = []
        for _ in range(args.rounds):
            elapsed, run = timed(lambda: reconcile_incremental(advance=False))
            assert run.found == [], run.found[:5]
            incremental.append(elapsed)
            print(
                f"  incremental (checkpoints kept): {elapsed:6.1f} s; {run.summary()}", flush=True
            )
            elapsed, found = timed(reconcile)
            assert found == [], found[:5]
            full.append(elapsed)
            print(f"  full:                           {elapsed:6.1f} s", flush=True)
        elapsed, nightly = timed(reconcile_incremental)
        assert nightly.found == [], nightly.found[:5]
        print(f"  the nightly run (advancing):    {elapsed:6.1f} s; {nightly.summary()}")
        best_incremental, best_full = min(incremental), min(full)
        print(
            f"{args.entries:,} entries + a day of {nightly.entries:,} on {args.accounts:,} "
            f"accounts (load average {os.getloadavg()[0]:.1f}, 2 cores): incremental "
            f"{best_incremental:.1f} s, full {best_full:.1f} s (best of {args.rounds}), "
            f"full/incremental {best_full / best_incremental:.0f}x; nightly (advancing) "
            f"{elapsed:.1f} s; target < 10 s: {'OK' if elapsed < 10 else 'MISSED'}"
        )
        print(sizes())
    finally:
        if args.keep:
            print(f"kept {connection.settings_dict['NAME']}")
        else:
            connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
