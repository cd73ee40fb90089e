"""Pages and reports as the data grows (issue 23, "Data growth"): 1 thousand against 10 million
requests.

Fills a database of its own per size with N gateway requests' worth of rows, by bulk SQL (not
the API: 10 million pairs through it would take hours), then times, with a warm cache, the user
API's reports and pages and the admin's ledger pages through the whole Django stack (the test
client, production settings, a knox token or a staff session), and prints a table of the
sizes side by side with their ratio.

**The data** (`FILL`, one statement per table, all in this one place so that a schema change
is one edit here): `accounts` users with a credit account, two API keys and two lots each (a
never-expiring purchase lot that pays the charges, then the signup lot); requests spread over
the last `SPAN_DAYS` days, oldest first, so ids grow with time as in production. Three heavy
accounts take 10% of the requests each; a **quiet heavy** one takes the oldest 5% and nothing
since (its first ledger page is far behind everyone's newer entries); the rest go to the
other accounts. Every request is a hold (committed, or released for the 1 in 10 that fail),
a usage record (two models, two keys) and, when charged, a `charge` entry of -1 whose
`balance_after` runs down the account's purchase lot; the hourly buckets are the records
grouped as the settle's trigger groups them; balances, `consumed`, lots' `remaining` are what
the entries add up to (`reconcile_ledger` agrees). The holds carry no stored decision (the
`bytes` helper removes the blob; it is never read here). Request ids are 36-character uuids.

Loading: foreign-key and user triggers off for the session (`session_replication_role =
replica`: the append-only and bucket triggers, the RI checks), each big table's secondary
indexes dropped before its INSERT and built again after it (the same definitions, read from
the catalogue), then VACUUM ANALYZE (what autovacuum would have done by the time anyone looks).

Needs PostgreSQL. Databases `<DATABASE_URL's name>_scale_<N>`, kept by default so that two
versions of the code can be timed against the same data (`--reuse` times an existing one as it
is, after migrating it); `--drop` drops them at the end:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/billing_scale \\
        .venv/bin/python bench/scale.py --sizes 1000,10000000 [--runs 7] [--reuse] [--drop]
"""

import argparse
import base64
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Production settings (persistent connections, DEBUG off), the admin's 2FA off (the bench logs
# its staff user in with force_login, as the admin tests do).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
os.environ.setdefault("ADMIN_REQUIRE_2FA", "0")

import django

django.setup()

import psycopg  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from accounts.models import User  # noqa: E402

SPAN_DAYS = 30
HEAVY = (1, 2, 3)  # accounts 1-3: 10% of the requests each
QUIET = 4  # account 4: the oldest 5% of the requests, nothing since
MODELS = ("kimi-k2-0905", "kimi-k2-turbo-preview")

# --- the rows: one statement per table ---------------------------------------------------------
# Parameters: n (requests), accounts, quiet (the quiet heavy account's last request number),
# now. Deterministic ids (md5 of a name) let each statement find the rows of the others.
UUID_OF = "md5('scale-{what}-' || {n})::uuid"


def uid(what: str, n: str) -> str:
    return UUID_OF.format(what=what, n=n)


FILL: list[tuple[str, str]] = [
    # The requests, once, in a scratch table every per-request statement reads.
    (
        "scale_request",
        f"""
        CREATE UNLOGGED TABLE scale_request AS
        SELECT r.i, r.a, r.k, r.model, r.ok, r.at,
               count(*) FILTER (WHERE r.ok) OVER (PARTITION BY r.a ORDER BY r.i) AS charge_no
          FROM (SELECT i,
                       CASE WHEN i <= %(quiet)s THEN {QUIET}
                            WHEN i %% 10 < 3 THEN 1 + i %% 10
                            ELSE {QUIET + 1} + (i * 2654435761) %% (%(accounts)s - {QUIET})
                       END AS a,
                       (i / 10) %% 2 AS k,
                       CASE WHEN (i / 20) %% 2 = 0 THEN '{MODELS[0]}' ELSE '{MODELS[1]}' END
                           AS model,
                       (i * 7919) %% 10 <> 0 AS ok,
                       %(now)s - interval '{SPAN_DAYS} days'
                           + (interval '{SPAN_DAYS} days' - interval '1 minute') * i / %(n)s
                           AS at
                  FROM generate_series(1::bigint, %(n)s::bigint) AS i) AS r
        """,
    ),
    (
        "scale_account",
        """
        CREATE UNLOGGED TABLE scale_account AS
        SELECT a, count(*) FILTER (WHERE ok) AS charges
          FROM scale_request GROUP BY a
        """,
    ),
    (
        "accounts_user",
        f"""
        INSERT INTO accounts_user (id, password, is_superuser, email, invite_code, is_active,
                                   is_staff, date_joined, pending_email, email_verified_at,
                                   signup_confirmed_at)
        SELECT {uid("account", "a")}, '!', false, 'scale-' || a || '@example.com',
               'SC' || lpad(a::text, 8, '0'), true, false,
               %(now)s - interval '{SPAN_DAYS + 2} days', '',
               %(now)s - interval '{SPAN_DAYS + 2} days', %(now)s - interval '{SPAN_DAYS + 2} days'
          FROM generate_series(1, %(accounts)s) AS a
        """,
    ),
    (
        "credits_creditaccount",
        f"""
        INSERT INTO credits_creditaccount (user_id, balance, reserved, consumed, frozen_reason,
                                           month_spent, low_balance_threshold)
        SELECT {uid("account", "g.a")}, 1100, 0, coalesce(s.charges, 0), '', 0, 10
          FROM generate_series(1, %(accounts)s) AS g(a) LEFT JOIN scale_account s USING (a)
        """,
    ),
    (
        "accounts_apikey",
        f"""
        INSERT INTO accounts_apikey (id, name, prefix, digest, created_at, user_id,
                                     budget_period, held, spent_day, spent_month, spent_total)
        SELECT {uid("key", "a || '-' || k")}, 'key ' || k, 'sk-kimi-' || a || k,
               md5('scale-digest-' || a || '-' || k) || md5('scale-digest-2-' || a || '-' || k),
               %(now)s - interval '{SPAN_DAYS + 2} days', {uid("account", "a")}, '', 0, 0, 0, 0
          FROM generate_series(1, %(accounts)s) AS a, generate_series(0, 1) AS k
        """,
    ),
    # Lot 2a-1: the purchase that pays every charge (granted = charges + 1,000, never expires,
    # older, so spent first); lot 2a: the untouched signup grant.
    (
        "credits_lot",
        f"""
        INSERT INTO credits_lot (id, account_id, source, package, granted, remaining, reserved,
                                 created_at, clawback_claimed, clawback_owed,
                                 clawback_uncollectable)
        SELECT 2 * g.a - 1 + l, {uid("account", "g.a")},
               CASE l WHEN 0 THEN 'purchase' ELSE 'signup' END,
               CASE l WHEN 0 THEN 'enterprise' ELSE '' END,
               CASE l WHEN 0 THEN coalesce(s.charges, 0) + 1000 ELSE 100 END,
               CASE l WHEN 0 THEN 1000 ELSE 100 END, 0,
               %(now)s - interval '{SPAN_DAYS + 2} days' + l * interval '1 second', 0, 0, 0
          FROM generate_series(1, %(accounts)s) AS g(a) LEFT JOIN scale_account s USING (a),
               generate_series(0, 1) AS l
        """,
    ),
    (
        "credits_ledgerentry (grants)",
        f"""
        INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,
                                         idempotency_key, reference, reason, created_at)
        SELECT {uid("account", "g.a")}, 2 * g.a - 1 + l, 'grant',
               CASE l WHEN 0 THEN coalesce(s.charges, 0) + 1000 ELSE 100 END,
               CASE l WHEN 0 THEN coalesce(s.charges, 0) + 1000
                      ELSE coalesce(s.charges, 0) + 1100 END,
               CASE l WHEN 0 THEN 'purchase:scale-' || g.a ELSE 'signup:scale-' || g.a END,
               CASE l WHEN 0 THEN 'purchase:scale-' || g.a ELSE 'signup' END, '',
               %(now)s - interval '{SPAN_DAYS + 2} days' + l * interval '1 second'
          FROM generate_series(1, %(accounts)s) AS g(a) LEFT JOIN scale_account s USING (a),
               generate_series(0, 1) AS l
         ORDER BY l, g.a
        """,
    ),
    (
        "credits_hold",
        f"""
        INSERT INTO credits_hold (id, request_id, amount, status, charged, created_at,
                                  expires_at, settled_at, account_id, api_key_id, lot_id)
        SELECT {uid("hold", "i")}, {uid("request", "i")}::text, 1,
               CASE WHEN ok THEN 'committed' ELSE 'released' END, ok::int,
               at - interval '2 seconds', at + interval '658 seconds', at,
               {uid("account", "a")}, {uid("key", "a || '-' || k")}, 2 * a - 1
          FROM scale_request ORDER BY i
        """,
    ),
    (
        "credits_usagerecord",
        f"""
        INSERT INTO credits_usagerecord (request_id, account_id, api_key_id, model,
                                         prompt_tokens, completion_tokens, outcome, reason,
                                         http_status, charged, settled_at)
        SELECT {uid("request", "i")}::text, {uid("account", "a")},
               {uid("key", "a || '-' || k")}, model, 20 + i %% 50, 100 + i %% 300,
               CASE WHEN ok THEN 'success' ELSE 'failure' END,
               CASE WHEN ok THEN '' ELSE 'upstream_error' END,
               CASE WHEN ok THEN 200 ELSE 502 END, ok::int, at
          FROM scale_request ORDER BY i
        """,
    ),
    (
        "credits_ledgerentry (charges)",
        f"""
        INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, balance_after,
                                         idempotency_key, reference, reason, created_at)
        SELECT {uid("account", "r.a")}, 2 * r.a - 1, 'charge', -1,
               s.charges + 1100 - r.charge_no,
               'charge:' || {uid("hold", "r.i")}, 'request:' || {uid("request", "r.i")}, '',
               r.at
          FROM scale_request r JOIN scale_account s USING (a)
         WHERE r.ok ORDER BY r.i
        """,
    ),
    # What the settle's trigger writes row by row (migration credits 0005), in one statement.
    (
        "credits_usagebucket",
        """
        INSERT INTO credits_usagebucket (account_id, api_key_id, model, hour, requests, credits,
                                         prompt_tokens, completion_tokens)
        SELECT account_id, api_key_id, model, date_trunc('hour', settled_at, 'UTC'), count(*),
               sum(charged), sum(CASE WHEN charged > 0 THEN prompt_tokens ELSE 0 END),
               sum(CASE WHEN charged > 0 THEN completion_tokens ELSE 0 END)
          FROM credits_usagerecord
         GROUP BY 1, 2, 3, 4 ORDER BY 4
        """,
    ),
]

# Tables whose secondary indexes are dropped for the load and built again after it.
BIG_TABLES = (
    "credits_ledgerentry",
    "credits_hold",
    "credits_usagerecord",
    "credits_usagebucket",
)
SEQUENCES = ("credits_lot", "credits_ledgerentry", "credits_usagerecord", "credits_usagebucket")


def database_name(base: str, n: int) -> str:
    return f"{base}_scale_{n}"


def dsn(name: str) -> str:
    settings = connection.settings_dict
    return (
        f"host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432} "
        f"user={settings['USER']} dbname={name}"
    )


def use_database(name: str) -> None:
    """Point Django's default connection at another database (closing the current one)."""
    connection.close()
    connection.settings_dict["NAME"] = name


def secondary_indexes(cursor: Any, table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX ...) of the table's indexes that back no constraint."""
    cursor.execute(
        """
        SELECT i.relname, pg_get_indexdef(x.indexrelid)
          FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = %s::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        """,
        (table,),
    )
    return list(cursor.fetchall())


def unreferenced_keys(cursor: Any, table: str) -> list[tuple[str, str, str]]:
    """(name, CREATE UNIQUE INDEX ..., PRIMARY KEY | UNIQUE) of the table's primary key and
    unique constraints that no foreign key points at: dropped for the load too (a random uuid
    key is the slowest index to insert into row by row) and put back on an index built after."""
    cursor.execute(
        """
        SELECT c.conname, pg_get_indexdef(c.conindid),
               CASE c.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END
          FROM pg_constraint c
         WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u')
           AND NOT EXISTS (SELECT 1 FROM pg_constraint f
                            WHERE f.contype = 'f' AND f.conindid = c.conindid)
        """,
        (table,),
    )
    return list(cursor.fetchall())


def fill(name: str, n: int) -> float:
    """Create database `name` (dropped first), migrate it and fill it with `n` requests."""
    started = time.perf_counter()
    with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    use_database(name)
    call_command("migrate", verbosity=0)
    connection.close()
    accounts = max(50, n // 1000)
    params = {"n": n, "accounts": accounts, "quiet": max(1, n // 20), "now": django_now()}
    with psycopg.connect(dsn(name), autocommit=True) as db:
        db.execute("SET session_replication_role = replica")  # no FK checks, no triggers
        db.execute("SET maintenance_work_mem = '256MB'")
        db.execute("SET work_mem = '64MB'")
        dropped: list[tuple[str, str]] = []
        keys: list[tuple[str, str, str, str]] = []
        with db.cursor() as cursor:
            for table in BIG_TABLES:
                for index, definition in secondary_indexes(cursor, table):
                    cursor.execute(f'DROP INDEX "{index}"')
                    dropped.append((index, definition))
                for key, definition, kind in unreferenced_keys(cursor, table):
                    cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{key}"')
                    keys.append((table, key, definition, kind))
            for what, statement in FILL:
                step = time.perf_counter()
                cursor.execute(statement, params)
                print(f"    {what}: {cursor.rowcount:,} rows, {time.perf_counter() - step:.0f} s")
            step = time.perf_counter()
            for _index, definition in dropped:
                cursor.execute(definition)
            for table, key, definition, kind in keys:
                cursor.execute(definition)
                cursor.execute(
                    f'ALTER TABLE {table} ADD CONSTRAINT "{key}" {kind} USING INDEX "{key}"'
                )
            print(
                f"    {len(dropped)} indexes and {len(keys)} keys built: "
                f"{time.perf_counter() - step:.0f} s"
            )
            for table in SEQUENCES:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            cursor.execute("DROP TABLE scale_request, scale_account")
            step = time.perf_counter()
            cursor.execute("VACUUM ANALYZE")
            print(f"    VACUUM ANALYZE: {time.perf_counter() - step:.0f} s")
    took = time.perf_counter() - started
    print(f"  {name}: {n:,} requests, {accounts:,} accounts, filled in {took:.0f} s")
    return took


def django_now() -> Any:
    from credits import clock

    return clock.now()


def sizes_of(name: str) -> dict[str, tuple[int, int, int]]:
    """Rows, heap (with TOAST) and index bytes of the big tables."""
    with psycopg.connect(dsn(name)) as db:
        rows = db.execute(
            """
            SELECT c.relname, c.reltuples::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid)
              FROM pg_class c WHERE c.relname = ANY(%s)
            """,
            (list(BIG_TABLES),),
        ).fetchall()
    return {table: (count, heap, index) for table, count, heap, index in rows}


# --- the pages ---------------------------------------------------------------------------------


@dataclass
class Subject:
    """What the timed calls need in one database: tokens, a staff client, cursors and ids."""

    name: str
    n: int
    user_client: Client
    staff_client: Client
    urls: dict[str, tuple[str, str]] = field(default_factory=dict)  # page -> (client, url)
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # this process's CPU, ms
    status: dict[str, int] = field(default_factory=dict)


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def email_of(account: int) -> str:
    return f"scale-{account}@example.com"


def prepare(name: str, n: int) -> Subject:
    """Log in (a knox token per timed user, a staff session) and pick the pages' URLs."""
    use_database(name)
    try:  # what the beat has done by the time anyone looks (this version's, if it has one)
        from credits.usage.dashboard import usage_hours_roll_up
    except ImportError:
        pass
    else:
        usage_hours_roll_up()
    staff, _ = User.objects.get_or_create(
        email="scale-staff@example.com",
        defaults={"is_staff": True, "is_superuser": True, "invite_code": "SCALESTAFF"},
    )
    # A page that fails (the old version's 30-second statement timeout) is a status, not a crash.
    staff_client = Client(raise_request_exception=False)
    staff_client.force_login(staff)
    user_client = Client(raise_request_exception=False)
    tokens = {
        account: AuthToken.objects.create(User.objects.get(email=email_of(account)))[1]
        for account in (HEAVY[0], QUIET)
    }
    subject = Subject(name, n, user_client, staff_client)
    with connection.cursor() as cursor:

        def one(sql: str, *args: Any) -> Any:
            cursor.execute(sql, args)
            return cursor.fetchone()

        busy = str(User.objects.get(email=email_of(HEAVY[0])).pk)
        quiet = str(User.objects.get(email=email_of(QUIET)).pk)
        # Deep positions: the middle of each account's history.
        (busy_mid,) = one(
            "SELECT id FROM credits_ledgerentry WHERE account_id = %s ORDER BY id "
            "OFFSET (SELECT count(*) / 2 FROM credits_ledgerentry WHERE account_id = %s) LIMIT 1",
            busy,
            busy,
        )
        (quiet_mid,) = one(
            "SELECT id FROM credits_ledgerentry WHERE account_id = %s ORDER BY id "
            "OFFSET (SELECT count(*) / 2 FROM credits_ledgerentry WHERE account_id = %s) LIMIT 1",
            quiet,
            quiet,
        )
        at, record_id = one(
            "SELECT settled_at, id FROM credits_usagerecord WHERE account_id = %s ORDER BY "
            "settled_at, id OFFSET (SELECT count(*) / 2 FROM credits_usagerecord "
            "WHERE account_id = %s) LIMIT 1",
            busy,
            busy,
        )
        (entries,) = one("SELECT max(id) FROM credits_ledgerentry")
        (reference,) = one("SELECT reference FROM credits_ledgerentry WHERE id = %s", busy_mid)
    users = "/admin/accounts/user/"
    ledger = "/admin/credits/ledgerentry/"
    position = _b64({"at": at.isoformat(), "id": record_id})
    subject.urls = {
        "credits": (f"Token {tokens[HEAVY[0]]}", "/api/user/credits"),
        "requests, first page": (f"Token {tokens[HEAVY[0]]}", "/api/user/requests"),
        "requests, deep cursor": (
            f"Token {tokens[HEAVY[0]]}",
            f"/api/user/requests?cursor={position}",
        ),
        "ledger, busy, first page": (f"Token {tokens[HEAVY[0]]}", "/api/user/ledger"),
        "ledger, busy, deep cursor": (
            f"Token {tokens[HEAVY[0]]}",
            f"/api/user/ledger?cursor={_b64({'before': busy_mid})}",
        ),
        "ledger, quiet heavy, first page": (f"Token {tokens[QUIET]}", "/api/user/ledger"),
        "ledger, quiet heavy, kind=charge": (
            f"Token {tokens[QUIET]}",
            "/api/user/ledger?kind=charge",
        ),
        "ledger, quiet heavy, deep cursor": (
            f"Token {tokens[QUIET]}",
            f"/api/user/ledger?cursor={_b64({'before': quiet_mid})}",
        ),
        "admin ledger": ("staff", ledger),
        "admin ledger, search reference": ("staff", f"{ledger}?q={reference}"),
        "admin ledger, user filter (busy)": ("staff", f"{ledger}?user={email_of(HEAVY[0])}"),
        "admin ledger, user filter (quiet)": ("staff", f"{ledger}?user={email_of(QUIET)}"),
        "admin ledger, kind filter (grant)": ("staff", f"{ledger}?kind__exact=grant"),
        "admin ledger, sorted by amount": ("staff", f"{ledger}?o=3"),
        "admin ledger, sorted oldest first": ("staff", f"{ledger}?o=0"),
        "admin ledger, deep page (?p=)": ("staff", f"{ledger}?p={max(2, entries // 200)}"),
        "admin ledger, deep page (keyset)": ("staff", f"{ledger}?before={entries // 2}"),
        "admin user page (busy)": ("staff", f"{users}{busy}/change/"),
        "admin user page (quiet)": ("staff", f"{users}{quiet}/change/"),
        "admin dashboard": ("staff", "/admin/"),
    }
    return subject


def timed(subject: Subject, page: str) -> tuple[float, float]:
    """Wall time and this process's CPU time (Django's share, free of other processes' load)
    of one call, in ms."""
    credential, url = subject.urls[page]
    started, cpu_started = time.perf_counter(), time.process_time()
    if credential == "staff":
        response = subject.staff_client.get(url)
    else:
        response = subject.user_client.get(url, HTTP_AUTHORIZATION=credential)
    elapsed = (time.perf_counter() - started) * 1000
    cpu = (time.process_time() - cpu_started) * 1000
    subject.status[page] = response.status_code
    return elapsed, cpu


def run(subjects: list[Subject], runs: int, slow_ms: float) -> None:
    """Warm up each page once, then `runs` rounds, each asking every size every page in turn
    (a busy machine weighs on every size alike). A page whose warm-up took over `slow_ms` is
    timed once more only (the version before the fixes took seconds, up to the 30-second
    statement timeout)."""
    pages = list(subjects[0].urls)
    slow: set[tuple[str, str]] = set()
    for subject in subjects:
        use_database(subject.name)
        for page in pages:
            if timed(subject, page)[0] > slow_ms:
                slow.add((subject.name, page))
    for round_no in range(runs):
        for subject in subjects:
            use_database(subject.name)
            for page in pages:
                if (subject.name, page) in slow and round_no >= 1:
                    continue
                elapsed, cpu = timed(subject, page)
                subject.samples.setdefault(page, []).append(elapsed)
                subject.cpu.setdefault(page, []).append(cpu)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * 0.95) - 1)]


def report(subjects: list[Subject], printer: Callable[[str], None] = print) -> None:
    small, large = subjects[0], subjects[-1]
    printer(
        f"| page | {small.n:,}: p50 / p95 ms | {large.n:,}: p50 / p95 ms | ratio of p50s "
        f"| Django CPU p50, {small.n:,} / {large.n:,} |"
    )
    printer("|---|---:|---:|---:|---:|")
    for page in small.urls:
        cells = []
        for subject in (small, large):
            values = subject.samples.get(page, [])
            status = subject.status.get(page)
            flag = "" if status == 200 else f" (HTTP {status})"
            cells.append(f"{statistics.median(values):,.1f} / {p95(values):,.1f}{flag}")
        ratio = statistics.median(large.samples[page]) / statistics.median(small.samples[page])
        cpu = " / ".join(f"{statistics.median(s.cpu[page]):,.1f}" for s in (small, large))
        printer(f"| {page} | {cells[0]} | {cells[1]} | {ratio:.2f}x | {cpu} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="time existing databases")
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--drop", action="store_true", help="drop the databases at the end")
    parser.add_argument("--slow-ms", type=float, default=3000)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/scale.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    sizes = [int(s) for s in args.sizes.split(",")]
    base = connection.settings_dict["NAME"]
    names = [database_name(base, n) for n in sizes]
    try:
        for n, name in zip(sizes, names, strict=True):
            if args.reuse:
                use_database(name)
                call_command("migrate", verbosity=0)  # this version's indexes, if any
            else:
                fill(name, n)
            for table, (rows, heap, index) in sizes_of(name).items():
                print(
                    f"    {table}: {rows:,} rows, heap {heap / 2**20:,.0f} MiB, "
                    f"indexes {index / 2**20:,.0f} MiB"
                )
        if args.fill_only:
            return
        setup_test_environment()
        subjects = [prepare(name, n) for n, name in zip(sizes, names, strict=True)]
        run(subjects, args.runs, args.slow_ms)
        print(
            f"\n{args.runs} timed rounds (load average {os.getloadavg()[0]:.1f}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        )
        report(subjects)
    finally:
        connection.close()
        if args.drop:
            with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
                for name in names:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"dropped {', '.join(names)}")


if __name__ == "__main__":
    main()
