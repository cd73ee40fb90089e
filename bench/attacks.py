"""Attacks on the running service, kept as a regression bench (issue 15, items 3 and 4).

    .venv/bin/python bench/attacks.py                  # the three attacks, about 2.5 minutes
    .venv/bin/python bench/attacks.py --legacy         # the same against the old set-up

Loopback only, with its own throwaway PostgreSQL cluster (initdb, port `--pg-port`, default
5441, `max_connections=60`) and redis-server (`--redis-port`, default 6391), both removed at the
end (bench/faults.py's helpers): the burst is meant to exhaust connections, and must not do it
to the shared PostgreSQL on 5432. The service runs as production does (`config.serve`: a
public and an internal granian listener, each 2 workers x `--threads` threads, `config.settings`
with DEBUG off). `--legacy` runs one granian listener with its default threads (128 per
worker) and 4 workers, as before the fix.

- **burst then probe**: `--clients` (300) concurrent gateway connections call authorize+settle
  on the internal listener for `--burst` s (15), then one client probes for `--probe` s (10).
  Printed: answers and errors (non-200 or no answer within 2 s) in each phase, the peak number
  of server connections PostgreSQL saw, and how long after the burst the first 20 probes in a
  row succeeded.
- **slow clients**: `--slow` (300) sockets that announce a 1,000-byte webhook body and send one
  byte (a lying Content-Length), plus `--idle` (300) sockets that send half a request line, all
  on the public listener for `--hold` s (15), while one client probes authorize+settle on the
  internal listener and `/healthz` on the public one. Printed: latency percentiles and failures
  of each probe.

- **reconcile under load**: `--entries` (1,000,000) ledger entries are added to one account
  (one INSERT ... SELECT), then `reconcile()` runs over the whole ledger while one client
  calls authorize+settle on that account's keys. Printed: the reconcile's duration and
  discrepancies, and the calls' latency meanwhile (before issue 15, reconcile held the
  account's row lock while it read its entries: 64 s for 4 million, and authorize waited).

It measures and prints; the exit status is 1 if the probes after the burst, the
authorizations during the slow-client attack or during the reconcile had any error or
answered slower than 250 ms at p99, or the reconcile found a discrepancy.
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faults  # the throwaway cluster and Redis
import gateway as bench_gateway  # seed, environment, process helpers

from config.serve import command

ROOT = bench_gateway.ROOT
PYTHON = bench_gateway.PYTHON
BUDGET = 0.25


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--legacy", action="store_true", help="the set-up before the fix")
    parser.add_argument("--attacks", default="burst,slow,reconcile")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--burst", type=float, default=15.0)
    parser.add_argument("--probe", type=float, default=10.0)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--hold", type=float, default=15.0)
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="entries added for the reconcile attack"
    )
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--port", type=int, default=8785)
    parser.add_argument("--internal-port", type=int, default=8786)
    parser.add_argument("--pg-port", type=int, default=5441)
    parser.add_argument("--redis-port", type=int, default=6391)
    args = parser.parse_args()
    args.redis_db = 0
    return args


def start_service(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    env = bench_gateway.environment(args, "config.settings")
    env.update(
        HOST="127.0.0.1",
        PORT=str(args.port),
        INTERNAL_PORT=str(args.internal_port),
        WEB_THREADS=str(args.threads),
        INTERNAL_THREADS=str(args.threads),
        STRIPE_SECRET_KEY="sk_test_attacks",
        STRIPE_WEBHOOK_SECRET="whsec_attacks",
    )
    granian = str(Path(PYTHON).parent / "granian")
    if args.legacy:
        # One listener for everything, granian's default threads, as the README used to say.
        commands = [
            f"{granian} --interface wsgi --host 127.0.0.1 --port {args.port} --workers 4 "
            "--no-ws credits.gateway.wsgi:application".split()
        ]
        args.internal_port = args.port
    else:
        commands = [command(name, env, granian=granian) for name in ("public", "internal")]
    servers = [
        subprocess.Popen(
            c,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for c in commands
    ]
    if not all(bench_gateway.wait_healthy(port, 60) for port in {args.port, args.internal_port}):
        stop_service(servers)
        raise SystemExit("the service did not come up")
    return servers


def stop_service(servers: list[subprocess.Popen[bytes]]) -> None:
    for server in servers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# --- raw HTTP/1.1 over asyncio -------------------------------------------------------------------


class Conn:
    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        payload = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split()[1])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def pair(conn: Conn, key: str) -> float:
    """One authorize+settle; its duration, or raises on anything but two 200s."""
    request_id = f"atk-{uuid.uuid4().hex}"
    started = time.monotonic()
    try:
        status, answer = await asyncio.wait_for(
            conn.post(
                "/internal/v1/authorize",
                {"api_key": key, "request_id": request_id, "model": "m", "format": "openai"},
            ),
            2.0,
        )
        if status != 200 or not answer.get("allowed"):
            denial = answer.get("error", {}).get("error", {}).get("message")
            raise RuntimeError(f"authorize {status} {answer.get('status')} {denial}")
        status, answer = await asyncio.wait_for(
            conn.post(
                "/internal/v1/settle",
                {"request_id": request_id, "outcome": "failure", "reason": "client_error"},
            ),
            2.0,
        )
        if status != 200:
            raise RuntimeError(f"settle {status}")
    except BaseException:
        conn.close()
        raise
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def peak_connections(args: argparse.Namespace, stop: asyncio.Event) -> "asyncio.Task[int]":
    import psycopg

    async def watch() -> int:
        peak = 0
        conn = await psycopg.AsyncConnection.connect(
            f"postgres://postgres@127.0.0.1:{args.pg_port}/postgres", autocommit=True
        )
        async with conn:
            while not stop.is_set():
                cursor = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                    [bench_gateway.BENCH_DB],
                )
                row = await cursor.fetchone()
                peak = max(peak, int(row[0]) if row else 0)
                await asyncio.sleep(0.2)
        return peak

    return asyncio.ensure_future(watch())


# --- the attacks ---------------------------------------------------------------------------------


async def burst_then_probe(args: argparse.Namespace, token: str, keys: list[str]) -> bool:
    stop_burst, stop_watch = asyncio.Event(), asyncio.Event()
    watcher = peak_connections(args, stop_watch)
    answered, errors = 0, 0

    async def client(n: int) -> None:
        nonlocal answered, errors
        conn = Conn(args.internal_port, token)
        while not stop_burst.is_set():
            try:
                await pair(conn, keys[n % len(keys)])
                answered += 1
            except Exception:
                errors += 1
                await asyncio.sleep(0.1)
        conn.close()

    clients = [asyncio.ensure_future(client(n)) for n in range(args.clients)]
    await asyncio.sleep(args.burst)
    stop_burst.set()
    await asyncio.gather(*clients, return_exceptions=True)
    burst_end = time.monotonic()

    conn = Conn(args.internal_port, token)
    probes: list[float] = []
    probe_errors, streak, recovered_after = 0, 0, None
    kinds: Counter[str] = Counter()
    while time.monotonic() - burst_end < args.probe:
        try:
            # Round the keys: one key alone would meet its tier's per-minute limit.
            probes.append(await pair(conn, keys[len(probes) % len(keys)]))
            streak += 1
            if streak == 20 and recovered_after is None:
                recovered_after = time.monotonic() - burst_end
        except Exception as exc:
            probe_errors += 1
            kinds[type(exc).__name__ if not str(exc) else str(exc)[:80]] += 1
            streak = 0
            await asyncio.sleep(0.05)
    conn.close()
    stop_watch.set()
    peak = await watcher
    print(
        f"burst: {args.clients} clients x {args.burst:.0f} s: {answered} pairs answered, "
        f"{errors} errors; peak {peak} PostgreSQL connections (max_connections 60)"
    )
    print(
        f"  probe after the burst, {args.probe:.0f} s: {len(probes)} pairs, {probe_errors} "
        f"errors; p50 {percentile(probes, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(probes, 0.99) * 1000:.1f} ms; 20 in a row after "
        + (f"{recovered_after:.1f} s" if recovered_after is not None else "never")
        + (f"; errors: {dict(kinds)}" if kinds else "")
    )
    return probe_errors == 0 and bool(probes) and percentile(probes, 0.99) < BUDGET


async def slow_clients(args: argparse.Namespace, token: str, keys: list[str]) -> bool:
    held: list[asyncio.StreamWriter] = []
    for n in range(args.slow + args.idle):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.port), 2.0)
        except (OSError, TimeoutError) as exc:
            # The listener's accept queue is full: it refuses the rest of the attack.
            print(f"  the listener took {n} attacking sockets, then refused more ({exc!r})")
            break
        if n < args.slow:
            writer.write(
                b"POST /api/webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
        else:
            writer.write(b"GET /healthz HTT")
        held.append(writer)
    await asyncio.sleep(1.0)

    conn = Conn(args.internal_port, token)
    pairs: list[float] = []
    health: list[float] = []
    pair_errors = health_errors = 0
    started = time.monotonic()
    while time.monotonic() - started < args.hold:
        try:
            pairs.append(await pair(conn, keys[len(pairs) % len(keys)]))
        except Exception:
            pair_errors += 1
        probe_started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port), 1.0
            )
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 1.0)
            writer.close()
            if b" 200 " not in line:
                raise RuntimeError(line)
            health.append(time.monotonic() - probe_started)
        except Exception:
            health_errors += 1
        await asyncio.sleep(0.1)
    conn.close()
    for writer in held:
        writer.close()
    print(
        f"slow clients: {args.slow} slow bodies + {args.idle} idle sockets on the public "
        f"listener for {args.hold:.0f} s"
    )
    print(
        f"  authorize+settle on the {'same' if args.legacy else 'internal'} listener: "
        f"{len(pairs)} ok, {pair_errors} failed; p50 {percentile(pairs, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(pairs, 0.99) * 1000:.1f} ms, max {max(pairs, default=0) * 1000:.1f} ms"
    )
    print(
        f"  /healthz on the public listener: {len(health)} ok, {health_errors} failed (1 s timeout)"
    )
    return pair_errors == 0 and bool(pairs) and percentile(pairs, 0.99) < BUDGET


def _grow_account(email: str, entries: int) -> None:
    """Give the account `entries` more ledger entries (one lot, one +1 grant each), written
    with one INSERT ... SELECT generate_series, consistent with its balance and lot."""
    from django.db import connection, transaction
    from django.db.models import F

    from credits import clock
    from credits.models import CreditAccount, Lot, LotSource

    with transaction.atomic():
        account = CreditAccount.objects.select_for_update().get(user__email=email)
        lot = Lot.objects.create(
            account=account,
            source=LotSource.ADJUSTMENT,
            granted=entries,
            remaining=entries,
            created_at=clock.now(),
        )
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")  # a bulk load, not a request
            cursor.execute(
                "INSERT INTO credits_ledgerentry (account_id, lot_id, kind, amount, "
                "balance_after, idempotency_key, reference, reason, created_at) "
                "SELECT %s, %s, 'grant', 1, %s + g, 'bench-grow:' || %s || ':' || g, '', '', "
                "now() FROM generate_series(1, %s) AS g",
                [account.pk, lot.pk, account.balance, lot.pk, entries],
            )
        CreditAccount.objects.filter(pk=account.pk).update(balance=F("balance") + entries)


async def reconcile_under_load(args: argparse.Namespace, token: str, keys: list[str]) -> bool:
    """reconcile() over the whole ledger while the gateway authorizes on its largest account."""
    from credits.reconciliation import reconcile

    started = time.monotonic()
    await asyncio.to_thread(_grow_account, "bench0@example.com", args.entries)
    grown = time.monotonic() - started

    def timed_reconcile() -> tuple[float, int]:
        from django.db import connection

        try:
            began = time.monotonic()
            found = reconcile()
            return time.monotonic() - began, len(found)
        finally:
            connection.close()

    running = asyncio.ensure_future(asyncio.to_thread(timed_reconcile))
    conn = Conn(args.internal_port, token)
    pairs: list[float] = []
    errors = 0
    while not running.done():
        try:
            # keys[0..keys-1] are bench0's: the account being reconciled.
            pairs.append(await pair(conn, keys[len(pairs) % args.keys]))
        except Exception:
            errors += 1
        await asyncio.sleep(0.02)
    conn.close()
    took, found = await running
    print(
        f"reconcile: {args.entries:,} entries added to one account in {grown:.1f} s; "
        f"reconcile() took {took:.1f} s, {found} discrepancies"
    )
    print(
        f"  authorize+settle on that account meanwhile: {len(pairs)} ok, {errors} failed; "
        f"p50 {percentile(pairs, 0.5) * 1000:.1f} ms, p99 {percentile(pairs, 0.99) * 1000:.1f} "
        f"ms, max {max(pairs, default=0) * 1000:.1f} ms"
    )
    return found == 0 and errors == 0 and bool(pairs) and percentile(pairs, 0.99) < BUDGET


def main() -> None:
    args = parse_args()
    faults.use_private_services(args)
    bench_gateway.BENCH_DB = "billing_attacks"
    cluster = faults.Cluster(args.pg_port)
    redis = faults.RedisServer(args.redis_port)
    servers: list[subprocess.Popen[bytes]] = []
    ok = True
    try:
        keys, token = faults.start_and_seed(args, cluster, redis)
        from credits.gateway.models import Tier

        # The attacks measure capacity, not the per-key limits: no tier's limit may bind.
        Tier.objects.update(
            requests_per_minute=10**6, requests_per_hour=10**7, requests_per_day=10**8
        )
        print(f"seeded {len(keys)} keys")
        from django.db import connections

        connections.close_all()
        servers = start_service(args)
        print(
            "attacks: "
            + (
                "legacy: one granian listener, 4 workers, default threads"
                if args.legacy
                else f"config.serve: public + internal listeners, 2 workers x {args.threads} "
                "threads"
            )
        )
        for name in args.attacks.split(","):
            attack = {
                "burst": burst_then_probe,
                "slow": slow_clients,
                "reconcile": reconcile_under_load,
            }[name]
            ok = asyncio.run(attack(args, token, keys)) and ok
    finally:
        stop_service(servers)
        from django.db import connections

        connections.close_all()
        redis.remove()
        cluster.remove()
        shutil.rmtree(faults.METRICS_DIR, ignore_errors=True)
    print("\nRESULT: " + ("the service kept answering" if ok else "PROBLEMS"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
