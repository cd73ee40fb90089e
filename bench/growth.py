"""Bytes stored per gateway request (an authorize + settle pair): what the data grows by.

    .venv/bin/python bench/growth.py                        # 20,000 requests
    .venv/bin/python bench/growth.py --requests 5000 --database billing_growth_me

In its own scratch PostgreSQL database (`--database`, default `billing_growth`, dropped and
re-created, migrated, dropped again at the end unless `--keep`), in this process (no HTTP
server, no Redis: the in-process limiter, as `bench/writes.py`): `--accounts` accounts with a
million credits and `--keys` keys each, every key warmed up by one pair (its hourly bucket made),
then `--requests` requests through the hot path's own handlers (`credits.gateway.views`, so the
SQL functions on PostgreSQL), in a gateway's mix:

- request ids like a gateway's: 36-character UUIDs;
- keys, accounts, models (4) and formats (a third `anthropic`) drawn at random;
- a tenth settled as failures (with a reason, some with `http_status` 5xx, no usage);
- 1% of authorizes retried (a replay: writes nothing) and 1% of settles sent twice.

Every `--vacuum-every` requests (default 1,000) a `VACUUM` of the database, as autovacuum keeps
a busy table in production: a settle updates its hold (a second row version, not HOT), and
without it every hold would count twice. Then a last `VACUUM (ANALYZE)` and, per table that
grew: the heap (main fork), its TOAST table with its index, and each index, in bytes per request
(`pg_relation_size` of each relation after the run minus before it, divided by the requests).
These are whole 8 kB pages: free space inside them is included (the dead versions that VACUUM
made reusable, B-tree pages that split half full, the default fillfactor of 100 for heaps and 90
for B-tree leaves), as a disk holds them. The total adds up the tables written per request
(holds, usage records, ledger entries, usage buckets); the others (accounts, lots, keys) are
updated in place, so their size is bounded by their row count, and are listed apart.
`pgstattuple` then splits each heap into live tuples, dead tuples and free space, and the
average stored width of a row (`pg_column_size` of the row) is printed beside it, so that what
the rows hold can be told from what the pages waste.

It uses only what every version since issue 19 has (`views.authorize_answer`,
`views.settle_answer`, `bench.gateway.seed`), so the same script measures the previous version
from a worktree of it (README, "Data growth").

Not part of the test suite; nothing here asserts a target.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The scratch database's environment, its reset and the handlers' call: bench/writes.py's.
from bench.writes import PG, Call, environment, reset_database  # noqa: E402

MODELS = ("kimi-k2-0905", "kimi-k2-turbo-preview", "kimi-k2-0711-preview", "moonshot-v1-8k")
REASONS = ("upstream_error", "client_error", "client_disconnected", "timeout")
# Tables whose rows are written per request; the rest are reported if they grew at all.
PER_REQUEST = ("credits_hold", "credits_usagerecord", "credits_ledgerentry", "credits_usagebucket")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--keys", type=int, default=2, help="keys per account")
    parser.add_argument("--failures", type=float, default=0.10, help="share settled as failures")
    parser.add_argument("--seed", type=int, default=23, help="of the random mix")
    parser.add_argument("--vacuum-every", type=int, default=1_000, help="requests; 0: never")
    parser.add_argument("--database", default="billing_growth", help="dropped and re-created")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args()


def drop_database(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")  # type: ignore[arg-type]


def sizes(database: str) -> dict[str, dict[str, Any]]:
    """Per table: heap, TOAST (table and index) and each index, in bytes, after VACUUM."""
    import psycopg

    with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        tables: dict[str, dict[str, Any]] = {}
        # A partitioned table (the usage records since gateway 0015) is counted under its
        # root's name: its partitions' heaps added up, each partition's index under the name
        # of the parent's index it is attached to (or `<partition>_...` for a primary key,
        # which is per partition).
        rows = conn.execute(
            "SELECT r.relname, sum(pg_relation_size(c.oid)),"
            " sum(CASE WHEN c.reltoastrelid = 0 THEN 0"
            "      ELSE pg_total_relation_size(c.reltoastrelid) END)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid)"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' GROUP BY r.relname"
        ).fetchall()
        for name, heap, toast in rows:
            tables[name] = {"heap": int(heap), "toast": int(toast), "indexes": {}}
        for table, partition, index, size in conn.execute(
            "SELECT r.relname, t.relname, ri.relname, pg_relation_size(i.oid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_class r ON r.oid = coalesce(pg_partition_root(t.oid), t.oid)"
            " JOIN pg_class ri ON ri.oid = coalesce(pg_partition_root(i.oid), i.oid)"
            " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'"
        ):
            if partition != table and index.startswith(partition):
                index = "<partition>" + index[len(partition) :]
            indexes = tables[table]["indexes"]
            indexes[index] = indexes.get(index, 0) + size
    return tables


def heap_detail(database: str, tables: list[str]) -> dict[str, dict[str, float]]:
    """pgstattuple's split of each heap (live, dead, free bytes) and the mean stored row."""
    import psycopg

    detail: dict[str, dict[str, float]] = {}
    with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for table in tables:
            live, dead, free, count = conn.execute(
                "SELECT sum(s.tuple_len), sum(s.dead_tuple_len), sum(s.free_space),"
                " sum(s.tuple_count) FROM pg_class c, pgstattuple(c.oid) s"
                " WHERE c.relkind = 'r'"
                " AND coalesce(pg_partition_root(c.oid), c.oid) = %s::regclass",
                [table],
            ).fetchone()  # type: ignore[misc]
            width = conn.execute(f"SELECT avg(pg_column_size(t.*)) FROM {table} t").fetchone()[0]  # type: ignore[index]
            detail[table] = {
                "live": live,
                "dead": dead,
                "free": free,
                "rows": count,
                "row_width": float(width or 0),
            }
    return detail


def settle_payload(request_id: str, rng: random.Random, failure: bool) -> dict[str, Any]:
    model = rng.choice(MODELS)
    if failure:
        return {
            "request_id": request_id,
            "outcome": "failure",
            "http_status": rng.choice([None, 500, 502, 503, 429]),
            "model": model,
            "reason": rng.choice(REASONS),
        }
    return {
        "request_id": request_id,
        "outcome": "success",
        "http_status": 200,
        "model": model,
        "usage": {
            "prompt_tokens": rng.randint(5, 4_000),
            "completion_tokens": rng.randint(1, 2_000),
        },
        "reason": None,
    }


def vacuum(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
        conn.execute("VACUUM")


def run(args: argparse.Namespace, keys: list[str], token: str, rng: random.Random) -> Counter:
    from credits.gateway import views

    auth = f"Bearer {token}"
    seen: Counter[str] = Counter()
    for n in range(args.requests):
        if args.vacuum_every and n and n % args.vacuum_every == 0:
            vacuum(args.database)
        request_id = str(uuid.uuid4())
        body = {
            "api_key": rng.choice(keys),
            "request_id": request_id,
            "model": rng.choice(MODELS),
            "format": "anthropic" if rng.random() < 1 / 3 else "openai",
        }
        decision = views.authorize_answer(Call(auth, body))
        assert decision.status == 200 and decision.payload["allowed"], decision.payload
        if rng.random() < 0.01:
            replay = views.authorize_answer(Call(auth, body))
            assert replay.payload == decision.payload, (replay.payload, decision.payload)
            seen["authorize replays"] += 1
        failure = rng.random() < args.failures
        settle = settle_payload(request_id, rng, failure)
        answer = views.settle_answer(Call(auth, settle))
        assert answer.status == 200, answer.payload
        if rng.random() < 0.01:
            again = views.settle_answer(Call(auth, settle))
            assert again.payload == answer.payload, (again.payload, answer.payload)
            seen["settle replays"] += 1
        seen["failures" if failure else "successes"] += 1
    return seen


def per_request(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for table, now in sorted(after.items()):
        was = before.get(table, {"heap": 0, "toast": 0, "indexes": {}})
        heap = (now["heap"] - was["heap"]) / n
        toast = (now["toast"] - was["toast"]) / n
        indexes = {
            name: (size - was["indexes"].get(name, 0)) / n
            for name, size in sorted(now["indexes"].items())
        }
        total = heap + toast + sum(indexes.values())
        if total == 0 and table not in PER_REQUEST:
            continue
        figures[table] = {"heap": heap, "toast": toast, "indexes": indexes, "total": total}
    return figures


def show(table: str, figure: dict[str, Any], heap: dict[str, float] | None, n: int) -> None:
    print(f"  {table:28} {figure['total']:8.1f}")
    print(f"      heap                          {figure['heap']:8.1f}")
    if figure["toast"]:
        print(f"      toast                         {figure['toast']:8.1f}")
    for name, size in figure["indexes"].items():
        print(f"      {name:30}{size:8.1f}")
    if heap is not None:
        rows = max(heap["rows"], 1)
        print(
            f"      (heap: live {heap['live'] / rows:.0f} B/row, mean row"
            f" {heap['row_width']:.0f} B; dead {heap['dead'] / n:.1f} and free"
            f" {heap['free'] / n:.1f} B/request)"
        )


def main() -> None:
    args = parse_args()
    reset_database(args.database)
    env = environment(args.database)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connection

    from bench import gateway
    from credits.gateway import views
    from credits.reconciliation import reconcile

    rng = random.Random(args.seed)
    keys, token = gateway.seed(argparse.Namespace(accounts=args.accounts, keys=args.keys))
    for key in keys:  # each key seen (the one-call path) and its bucket of this hour made
        request_id = str(uuid.uuid4())
        body = {"api_key": key, "request_id": request_id, "model": MODELS[0], "format": "openai"}
        assert views.authorize_answer(Call(f"Bearer {token}", body)).status == 200
        views.settle_answer(Call(f"Bearer {token}", settle_payload(request_id, rng, False)))
    before = sizes(args.database)
    mix = run(args, keys, token, rng)
    after = sizes(args.database)
    n = args.requests
    figures = per_request(before, after, n)
    detail = heap_detail(args.database, [t for t in PER_REQUEST if t in after])
    total = sum(f["total"] for t, f in figures.items() if t in PER_REQUEST)
    print(
        f"bytes stored per request ({n:,} requests: {dict(mix)}; {args.accounts} accounts,"
        f" {len(keys)} keys; VACUUM every {args.vacuum_every:,}; whole pages, free space"
        " included):"
    )
    per = [t for t in figures if t in PER_REQUEST]
    for table in per:
        show(table, figures[table], detail.get(table), n)
    print(f"  total                        {total:8.1f} bytes per request")
    print("  updated in place (bounded by their row count, not per request):")
    for table in [t for t in figures if t not in PER_REQUEST]:
        show(table, figures[table], None, n)
    discrepancies = reconcile()
    print(f"  reconcile: {'clean' if not discrepancies else discrepancies[:5]}")
    if args.json:
        print(json.dumps({"requests": n, "mix": mix, "tables": figures, "heaps": detail}))
    connection.close()
    if not args.keep:
        drop_database(args.database)


if __name__ == "__main__":
    main()
