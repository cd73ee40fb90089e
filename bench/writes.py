"""Writes per authorize+settle pair: deterministic figures, unlike throughput.

    .venv/bin/python bench/writes.py                      # 200 pairs, single settles
    .venv/bin/python bench/writes.py --settle batch       # the same pairs, settles 100 a call
    .venv/bin/python bench/writes.py --pairs 500 --database billing_writes_me

In its own scratch PostgreSQL database (`--database`, default `billing_writes`, dropped and
re-created, migrated), in this process (no HTTP server, no Redis: the in-process limiter): one
account with a million credits and `--keys` keys, each key warmed up by one pair (so the
measured pairs take the steady path: the one-call authorize, an existing hourly usage bucket),
then `--pairs` pairs through the hot path's own handlers (`credits.gateway.views`), and per pair:

- client statements: round trips to PostgreSQL (every statement this process sent);
- function calls: the PL/pgSQL functions and trigger functions PostgreSQL ran
  (`pg_stat_user_functions`, `track_functions = pl` for this session);
- rows: inserted, updated (of which HOT), per table (`pg_stat_user_tables` deltas);
- index entries written, per index, and row locks: counted from the WAL itself (pg_walinspect:
  one btree insert record per index entry, one heap lock record per `FOR UPDATE` that had to
  write one), so a partial index whose predicate the row leaves is not counted;
- WAL: records and bytes of this database's relations and of the transactions that wrote them
  (commit records included), with full-page images apart: they depend on when the last
  checkpoint ran, the rest does not. The server is shared: other databases' WAL in the same
  interval is left out by the record's relation and transaction id, not by the LSN difference.

Not part of the test suite; nothing here asserts a target.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--keys", type=int, default=4, help="keys of the one account")
    parser.add_argument("--settle", choices=["single", "batch"], default="single")
    parser.add_argument("--database", default="billing_writes", help="dropped and re-created")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args()


def environment(database: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"{PG}/{database}",
            "REDIS_URL": "",
            "CELERY_BROKER_URL": "",
            "SECRET_KEY": "bench-only-secret-key-not-for-production",
            "DEBUG": "",
            "LOG_LEVEL": "ERROR",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def reset_database(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_walinspect")


@dataclass
class Call:
    """What the hot path's handlers read of a request (`credits.gateway.calls.Call`)."""

    authorization: str
    payload: dict[str, Any]
    method: str = "POST"

    def body(self) -> bytes:
        return json.dumps(self.payload).encode()


class Snapshot:
    """Cumulative statistics of the scratch database, read from another connection."""

    def __init__(self, database: str) -> None:
        import psycopg

        with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
            self.tables = {
                name: (ins, upd, hot)
                for name, ins, upd, hot in conn.execute(
                    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                )
            }
            self.functions = dict(
                conn.execute("SELECT funcname, calls FROM pg_stat_user_functions").fetchall()
            )
            self.lsn = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]  # type: ignore[index]


def flush_statistics() -> None:
    """This session's pending statistics into shared memory now (PostgreSQL 15 flushes them
    at most once a second otherwise), so that the next `Snapshot` sees them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT 1")


def wal_between(database: str, start: str, end: str) -> dict[str, Any]:
    """This database's WAL between two LSNs: records of its relations, plus every record of the
    transactions that wrote one (their commit records)."""
    import psycopg

    rel = re.compile(r"rel \d+/(\d+)/(\d+)")
    with psycopg.connect(f"{PG}/{database}", autocommit=True) as conn:
        dboid = conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]  # type: ignore[index]
        names = {
            int(node): name
            for node, name in conn.execute(
                "SELECT pg_relation_filenode(oid), relname FROM pg_class"
                " WHERE pg_relation_filenode(oid) IS NOT NULL"
            )
        }
        rows = conn.execute(
            "SELECT xid, resource_manager, record_type, record_length, fpi_length, block_ref"
            " FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)",
            [start, end],
        ).fetchall()
    parsed = []
    for xid, manager, kind, length, fpi, blocks in rows:
        match = rel.search(blocks or "")
        mine = bool(match) and int(match.group(1)) == dboid  # type: ignore[union-attr]
        node = int(match.group(2)) if mine else None  # type: ignore[union-attr]
        parsed.append((int(xid), manager, kind, length, fpi, node, mine))
    xids = {r[0] for r in parsed if r[6] and r[0]}
    # Records of this database's relations, and the rest of its transactions' (the commits).
    ours = [r for r in parsed if r[6] or (r[0] and r[0] in xids)]
    index_entries: Counter[str] = Counter()
    row_locks: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for _, manager, kind, _, _, node, _ in ours:
        name = names.get(node or -1, f"relfilenode {node}")
        first = kind.split()[0]
        kinds[f"{manager}/{first}"] += 1
        if manager == "Btree" and first in ("INSERT_LEAF", "INSERT_POST", "SPLIT_L", "SPLIT_R"):
            index_entries[name] += 1
        if manager == "Heap" and first == "LOCK":
            row_locks[name] += 1
    return {
        "records": len(ours),
        "bytes": sum(r[3] for r in ours),
        "fpi_bytes": sum(r[4] for r in ours),
        "commits": sum(1 for r in ours if r[1] == "Transaction" and r[2].startswith("COMMIT")),
        "index_entries": index_entries,
        "row_locks": row_locks,
        "kinds": kinds,
    }


def seed(keys: int) -> tuple[list[str], str]:
    """One account with a million credits and `keys` keys (bench/gateway.py's seed)."""
    sys.path.insert(0, str(ROOT))
    from bench import gateway

    return gateway.seed(argparse.Namespace(accounts=1, keys=keys))


def settle_payload(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "outcome": "success",
        "http_status": 200,
        "model": "kimi-k2-0905",
        "usage": {"prompt_tokens": 25, "completion_tokens": 189},
        "reason": None,
    }


def pairs(keys: list[str], token: str, count: int, *, batch: bool, tag: str) -> None:
    from credits.gateway import views

    auth = f"Bearer {token}"
    pending: list[dict[str, Any]] = []

    def settle_pending() -> None:
        answer = views.settle_batch_answer(Call(auth, {"settles": pending}))
        assert answer.status == 200, answer.payload
        assert all(r.get("charged") == 1 for r in answer.payload["results"]), answer.payload
        pending.clear()

    for n in range(count):
        request_id = f"{tag}-{n}"
        decision = views.authorize_answer(
            Call(
                auth,
                {
                    "api_key": keys[n % len(keys)],
                    "request_id": request_id,
                    "model": "kimi-k2-0905",
                    "format": "openai",
                },
            )
        )
        assert decision.status == 200 and decision.payload["allowed"], decision.payload
        if batch:
            pending.append(settle_payload(request_id))
            if len(pending) == 100:
                settle_pending()
        else:
            answer = views.settle_answer(Call(auth, settle_payload(request_id)))
            assert answer.status == 200 and answer.payload["charged"] == 1, answer.payload
    if pending:
        settle_pending()


def main() -> None:
    args = parse_args()
    reset_database(args.database)
    env = environment(args.database)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from credits.reconciliation import reconcile

    keys, token = seed(args.keys)
    pairs(keys, token, len(keys), batch=False, tag="warm")  # the keys seen, the bucket made
    with connection.cursor() as cursor:
        cursor.execute("SET track_functions = 'pl'")
    flush_statistics()
    before = Snapshot(args.database)
    statements: Counter[str] = Counter()

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[sql.split("(", 1)[0].split(" FROM ")[-1].strip()[:60]] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        pairs(keys, token, args.pairs, batch=args.settle == "batch", tag="pair")
    flush_statistics()
    after = Snapshot(args.database)
    wal = wal_between(args.database, before.lsn, after.lsn)
    n = args.pairs

    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for table, (ins, upd, hot) in after.tables.items():
        was = before.tables.get(table, (0, 0, 0))
        delta = (ins - was[0], upd - was[1], hot - was[2])
        if any(delta):
            rows[table] = {"inserted": delta[0] / n, "updated": delta[1] / n, "hot": delta[2] / n}
    calls = {
        name: (count_ - before.functions.get(name, 0)) / n
        for name, count_ in after.functions.items()
        if count_ != before.functions.get(name, 0)
    }
    figures = {
        "pairs": n,
        "settle": args.settle,
        "client_statements": sum(statements.values()) / n,
        "statements_by_kind": {k: v / n for k, v in statements.items()},
        "function_calls": calls,
        "rows": dict(rows),
        "index_entries": sum(wal["index_entries"].values()) / n,
        "index_entries_by_index": {k: v / n for k, v in wal["index_entries"].most_common()},
        "row_locks_logged": {k: v / n for k, v in wal["row_locks"].most_common()},
        "wal_records": wal["records"] / n,
        "wal_bytes_without_fpi": wal["bytes"] / n,
        "wal_fpi_bytes": wal["fpi_bytes"] / n,
        "commits": wal["commits"] / n,
        "wal_records_by_kind": {k: v / n for k, v in wal["kinds"].most_common()},
    }
    print(f"writes per authorize+settle pair ({n} pairs, settles: {args.settle}):")
    print(f"  client statements (round trips): {figures['client_statements']:.2f}")
    for kind, per in figures["statements_by_kind"].items():
        print(f"      {per:5.2f}  {kind}")
    print("  function and trigger calls in PostgreSQL:")
    for name, per in sorted(calls.items()):
        print(f"      {per:5.2f}  {name}")
    print("  rows (inserted / updated / of which HOT):")
    for table, figure in sorted(rows.items()):
        print(
            f"      {table:28} {figure['inserted']:5.2f} / {figure['updated']:5.2f} / "
            f"{figure['hot']:5.2f}"
        )
    print(f"  index entries written: {figures['index_entries']:.2f}")
    for name, per in figures["index_entries_by_index"].items():
        print(f"      {per:5.2f}  {name}")
    locks = " ".join(f"{k} {v:.2f}" for k, v in figures["row_locks_logged"].items())
    print(f"  row locks written to the WAL: {locks or 'none'}")
    print(
        f"  WAL: {figures['wal_records']:.2f} records, {figures['wal_bytes_without_fpi']:.0f} "
        f"bytes without full-page images (+ {figures['wal_fpi_bytes']:.0f} bytes of them, "
        f"which depend on the last checkpoint), {figures['commits']:.2f} commits"
    )
    discrepancies = reconcile()
    print(f"  reconcile: {'clean' if not discrepancies else discrepancies[:5]}")
    if args.json:
        print(json.dumps(figures, indent=2))
    connection.close()


if __name__ == "__main__":
    main()
