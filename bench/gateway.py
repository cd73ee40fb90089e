"""Benchmark of the gateway's hot path: authorize + settle pairs, as production runs them.

    .venv/bin/python bench/gateway.py              # about 3 minutes
    .venv/bin/python bench/gateway.py --quick      # shorter phases, for a smoke run
    .venv/bin/python bench/gateway.py --settle batch   # settles batched as a gateway would

`--settle batch` (issue 23): the load generator settles as a gateway that batches would: each
allowed request's settle goes to a batcher, which sends `POST /internal/v1/settle/batch` every
`--flush-ms` (10) milliseconds or `--batch-max` (100) items, whichever comes first, on up to
`--batch-connections` (4) connections at once; the client that made the request waits for its
item's answer (so a pair is still authorize + settle done, and the settle latency printed is
the gateway's: queueing in the batcher included).

What it does, all on loopback, in its own PostgreSQL database (`--database`, default
`billing_bench`, dropped and re-created) and Redis db (`--redis-db`, default 4: its keys are
per API key id, so nothing collides):

1. migrates, seeds `--accounts` accounts (default 200) with `--keys` keys each, and a service
   token;
2. starts the service like production: granian's WSGI server (or `--server gunicorn`, gthread
   workers) with `--workers` processes on `config.settings` (DEBUG off, persistent database
   connections, Redis limiter);
3. drives authorize+settle pairs for `--duration` seconds at concurrency 32, then 4, from a
   load generator in this process: Python asyncio over raw HTTP/1.1 keep-alive connections (one
   pair after the other per connection, request ids unique per run); prints pairs/s, p50/p99
   of each call, errors (any non-200, a decision that is not `allowed`, a settle that did not
   charge 1), and CPU per pair (/proc) of the workers, of the bench database's PostgreSQL
   backends (the PostgreSQL CPU surely ours on a shared server), of all PostgreSQL processes
   and of the load generator;
4. runs pgbench with the equivalent SQL (a conditional balance update plus a ledger insert, one
   transaction) at the same concurrency and prints our pairs/s as a ratio of it, and
   authorize's p99 as a multiple of pgbench's p99 (issue 23's c=4 target);
5. compares, in this process, our key verification with djangorestframework-api-key's
   `is_valid`, and our three-window limiter with the `limits` library on the same Redis;
6. checks `reconcile()` is clean and that the charges written equal the successful settles;
7. profiles one more run at concurrency 32 with py-spy (all workers) and prints where the
   workers spend their time.

Not part of the test suite: nothing here asserts a target; it measures and prints.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_DB = "billing_bench"
PG = "postgres://postgres@127.0.0.1:5432"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load phase")
    parser.add_argument("--concurrency", default="32,4")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--server", choices=["granian", "gunicorn"], default="granian")
    parser.add_argument(
        "--app",
        default="credits.gateway.wsgi:application",
        help="WSGI entry point (config.wsgi:application: the full middleware stack)",
    )
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--keys", type=int, default=2, help="keys per account")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--redis-db", type=int, default=4)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="5-second phases")
    parser.add_argument(
        "--server-args", default="", help="extra options for the server, e.g. '--runtime-mode st'"
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="skip the pgbench ceiling and the per-process comparisons (for tuning sweeps)",
    )
    parser.add_argument(
        "--database", default="billing_bench", help="dropped and re-created: give each run its own"
    )
    parser.add_argument(
        "--settle",
        choices=["single", "batch"],
        default="single",
        help="one settle call per request, or batched settles (POST /internal/v1/settle/batch)",
    )
    parser.add_argument("--flush-ms", type=float, default=10.0, help="batch mode: flush period")
    parser.add_argument("--batch-max", type=int, default=100, help="batch mode: items per call")
    parser.add_argument(
        "--batch-connections", type=int, default=4, help="batch mode: batch calls in flight"
    )
    args = parser.parse_args()
    global BENCH_DB
    BENCH_DB = args.database
    if args.quick:
        args.duration = 5.0
    return args


def environment(args: argparse.Namespace, settings: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"{PG}/{BENCH_DB}",
            "REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
            "SECRET_KEY": "bench-only-secret-key-not-for-production",
            "DEBUG": "",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": settings,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


# --- database and seed -------------------------------------------------------------------------


def reset_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def django_setup(args: argparse.Namespace) -> None:
    os.environ.update(environment(args, "bench.settings"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def seed(args: argparse.Namespace) -> tuple[list[str], str]:
    from accounts.models import User
    from accounts.service_tokens import service_token_create
    from accounts.services import api_key_create
    from credits import services
    from credits.models import LotSource

    keys: list[str] = []
    for n in range(args.accounts):
        user = User.objects.create(email=f"bench{n}@example.com", password="!")
        services.account_open(user_id=user.pk)
        services.credits_grant(
            user_id=user.pk,
            amount=1_000_000,
            source=LotSource.ADJUSTMENT,
            idempotency_key=f"bench-grant:{user.pk}",
        )
        for k in range(args.keys):
            keys.append(api_key_create(user=user, name=f"bench {k}")[1])
    _, token = service_token_create(name="bench")
    return keys, token


# --- the server ----------------------------------------------------------------------------------


def start_server(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = environment(args, "config.settings")
    if args.server == "granian":
        command = [
            str(Path(PYTHON).parent / "granian"),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
            "--blocking-threads",
            str(args.threads),
            "--no-ws",
            "--log-level",
            "warning",
            args.app,
        ]
    else:
        command = [
            str(Path(PYTHON).parent / "gunicorn"),
            "--bind",
            f"127.0.0.1:{args.port}",
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--worker-class",
            "gthread",
            "--log-level",
            "warning",
            args.app,
        ]
    command[-1:-1] = args.server_args.split()  # before the application's path
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    if not wait_healthy(args.port, timeout=30):
        stop_server(server)
        raise SystemExit("the server did not come up")
    return server


def wait_healthy(port: int, timeout: float) -> bool:
    """Whether `/healthz` on `port` answered 200 within `timeout` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def stop_server(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# --- CPU accounting ----------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """The command name of a process and the fields of /proc/PID/stat after it."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name_end = raw.rindex(")")
    return raw[raw.index("(") + 1 : name_end], raw[name_end + 2 :].split()


def _processes() -> dict[int, tuple[int, str]]:
    """Every live process: pid -> (parent pid, command name)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            name, fields = stat
            found[int(entry.name)] = (int(fields[1]), name)
    return found


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each live process of `pids` has used so far."""
    spent = {}
    for pid in pids:
        if (stat := _stat(pid)) is not None:
            fields = stat[1]
            spent[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    return spent


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two readings; a process started in between counts from zero (an
    autovacuum worker, a new connection), one that ended in between is lost (rare)."""
    return sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


def process_tree(root: int) -> list[int]:
    processes = _processes()
    tree = [root]
    for pid in tree:
        tree.extend(child for child, (parent, _) in processes.items() if parent == pid)
    return tree


def postgres_processes() -> list[int]:
    """Every PostgreSQL server process: the backends, and the WAL writer, checkpointer,
    autovacuum and the rest, whose work the load causes too."""
    return [pid for pid, (_, name) in _processes().items() if name == "postgres"]


def bench_backends() -> list[int]:
    """The PostgreSQL backends connected to the bench's database (the server's workers): on a
    server that other people's tests share, the only PostgreSQL CPU that is surely ours. It
    leaves out the WAL writer, checkpointer and autovacuum, which every database shares."""
    import psycopg

    with psycopg.connect(f"{PG}/{BENCH_DB}", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [BENCH_DB],
        ).fetchall()
    return [pid for (pid,) in rows]


# --- the load generator -----------------------------------------------------------------------


@dataclass
class Stats:
    authorize: list[float] = field(default_factory=list)
    settle: list[float] = field(default_factory=list)
    pairs: int = 0
    charged: int = 0
    charged_ids: list[str] = field(default_factory=list)  # request ids the clients saw charged
    errors: Counter[str] = field(default_factory=Counter)


async def _call(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, bytes]:
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    headers = await reader.readuntil(b"\r\n\r\n")
    length = None
    chunked = False
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        return status, await reader.readexactly(length)
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(parts)
    return status, b""


class Batcher:
    """Settles batched as a gateway batches them: items are queued, and a batch leaves every
    `flush_ms` milliseconds after its first item or at `batch_max` items, on one of
    `connections` keep-alive connections (batches in flight at once)."""

    def __init__(
        self, port: int, token: str, *, flush_ms: float, batch_max: int, connections: int
    ) -> None:
        self.port = port
        self.flush = flush_ms / 1000
        self.batch_max = batch_max
        self.connections = connections
        self.head = (
            b"POST /internal/v1/settle/batch HTTP/1.1\r\n"
            + (
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: "
            ).encode()
        )
        self.queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[Any]]] = asyncio.Queue()
        self.sizes: list[int] = []
        self.failures: Counter[str] = Counter()

    async def settle(self, body: dict[str, Any]) -> dict[str, Any]:
        """This item's answer in its batch (a settle answer, or an item error)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((body, future))
        answer: dict[str, Any] = await future
        return answer

    async def run(self) -> None:
        pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(self.connections):
            pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
        loop = asyncio.get_running_loop()
        sending: set[asyncio.Task[None]] = set()
        try:
            while True:
                batch = [await self.queue.get()]
                deadline = loop.time() + self.flush
                while len(batch) < self.batch_max:
                    try:
                        batch.append(
                            await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                        )
                    except TimeoutError:
                        break
                connection = await pool.get()
                task = asyncio.create_task(self._send(connection, pool, batch))
                sending.add(task)
                task.add_done_callback(sending.discard)
        finally:
            for task in list(sending):
                await task
            while not pool.empty():
                pool.get_nowait()[1].close()

    async def _send(
        self,
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
        batch: list[tuple[dict[str, Any], asyncio.Future[Any]]],
    ) -> None:
        self.sizes.append(len(batch))
        body = json.dumps({"settles": [item for item, _ in batch]}).encode()
        try:
            status, answer = await _call(*connection, self.head, body)
            results = json.loads(answer)["results"] if status == 200 else None
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
            status, results = 0, None
            self.failures[f"batch: {type(exc).__name__}"] += 1
        pool.put_nowait(connection)
        for n, (_, future) in enumerate(batch):
            if results is None:
                future.set_result({"status": status or 599, "error": {"code": "batch failed"}})
            else:
                future.set_result(results[n])


async def _worker(
    port: int,
    token: str,
    keys: list[str],
    stop_at: float,
    stats: Stats,
    tag: str,
    batcher: Batcher | None = None,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    common = (
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    authorize_head = b"POST /internal/v1/authorize HTTP/1.1\r\n" + common
    settle_head = b"POST /internal/v1/settle HTTP/1.1\r\n" + common
    rng = random.Random(tag)
    n = 0
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            n += 1
            request_id = f"{tag}-{n}"
            body = json.dumps(
                {
                    "api_key": rng.choice(keys),
                    "request_id": request_id,
                    "model": "kimi-k2-0905",
                    "format": "openai",
                }
            ).encode()
            started = clock()
            status, answer = await _call(reader, writer, authorize_head, body)
            stats.authorize.append(clock() - started)
            if status != 200:
                stats.errors[f"authorize HTTP {status}"] += 1
                continue
            if b'"allowed":true' not in answer.replace(b'": ', b'":'):
                stats.errors[f"denied: {answer[:120]!r}"] += 1
                continue
            body = json.dumps(
                {
                    "request_id": request_id,
                    "outcome": "success",
                    "http_status": 200,
                    "model": "kimi-k2-0905",
                    "usage": {"prompt_tokens": 25, "completion_tokens": 189},
                    "reason": None,
                }
            ).encode()
            started = clock()
            if batcher is None:
                status, answer = await _call(reader, writer, settle_head, body)
            else:
                item = await batcher.settle(json.loads(body))
                status = item.get("status", 200)
                answer = json.dumps(item).encode()
            stats.settle.append(clock() - started)
            if status != 200:
                stats.errors[f"settle HTTP {status}"] += 1
                continue
            if b'"charged":1' in answer.replace(b'": ', b'":'):
                stats.charged += 1
                stats.charged_ids.append(request_id)
            else:
                stats.errors["settle charged 0"] += 1
            stats.pairs += 1
    except (OSError, asyncio.IncompleteReadError) as exc:
        stats.errors[f"connection: {type(exc).__name__}"] += 1
    finally:
        writer.close()


# How `drive` settles: None (one call per settle) or the Batcher's settings (`--settle batch`).
BATCHING: dict[str, Any] | None = None


def drive(port: int, token: str, keys: list[str], concurrency: int, duration: float) -> Stats:
    stats = Stats()
    run = uuid.uuid4().hex[:8]

    async def main() -> None:
        stop_at = time.perf_counter() + duration
        batcher = Batcher(port, token, **BATCHING) if BATCHING is not None else None
        flusher = asyncio.create_task(batcher.run()) if batcher is not None else None
        await asyncio.gather(
            *(
                _worker(port, token, keys, stop_at, stats, f"{run}-{c}", batcher)
                for c in range(concurrency)
            )
        )
        if batcher is not None and flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            stats.errors.update(batcher.failures)
            if batcher.sizes:
                mean = statistics.mean(batcher.sizes)
                print(f"      {len(batcher.sizes)} batch calls, {mean:.1f} settles each on average")

    started = time.perf_counter()
    asyncio.run(main())
    stats_elapsed = time.perf_counter() - started
    stats.errors["_elapsed"] = int(stats_elapsed * 1000)  # milliseconds, popped by report
    return stats


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report_load(concurrency: int, stats: Stats) -> dict[str, Any]:
    elapsed = stats.errors.pop("_elapsed") / 1000
    errors = sum(stats.errors.values())
    row = {
        "concurrency": concurrency,
        "pairs_per_s": stats.pairs / elapsed,
        "pairs": stats.pairs,
        "authorize_p50_ms": percentile(stats.authorize, 0.50),
        "authorize_p99_ms": percentile(stats.authorize, 0.99),
        "settle_p50_ms": percentile(stats.settle, 0.50),
        "settle_p99_ms": percentile(stats.settle, 0.99),
        "errors": errors,
        "charged": stats.charged,
    }
    print(
        f"  c={concurrency:<3} {row['pairs_per_s']:8.1f} pairs/s  "
        f"authorize p50 {row['authorize_p50_ms']:.2f} ms p99 {row['authorize_p99_ms']:.2f} ms  "
        f"settle p50 {row['settle_p50_ms']:.2f} ms p99 {row['settle_p99_ms']:.2f} ms  "
        f"errors {errors}"
    )
    for what, count in stats.errors.most_common(5):
        print(f"      {count} x {what}")
    return row


# --- pgbench --------------------------------------------------------------------------------------

PGBENCH_SETUP = """
DROP TABLE IF EXISTS pgb_entry, pgb_account;
CREATE TABLE pgb_account (id integer PRIMARY KEY, balance integer NOT NULL);
CREATE TABLE pgb_entry (id bigserial PRIMARY KEY, account_id integer NOT NULL,
                        amount integer NOT NULL, balance_after integer NOT NULL,
                        idempotency_key text NOT NULL UNIQUE, created_at timestamptz NOT NULL);
INSERT INTO pgb_account SELECT g, 1000000000 FROM generate_series(1, {accounts}) g;
"""

PGBENCH_SCRIPT = """\\set aid random(1, {accounts})
BEGIN;
UPDATE pgb_account SET balance = balance - 1 WHERE id = :aid AND balance > 0;
INSERT INTO pgb_entry (account_id, amount, balance_after, idempotency_key, created_at)
VALUES (:aid, -1, 0, md5(random()::text || clock_timestamp()::text), now());
END;
"""


PGBENCH_SAMPLING = 0.1  # the share of transactions whose latency pgbench logs


def pgbench(args: argparse.Namespace, concurrency: int) -> tuple[float, float, float]:
    """pgbench's tps, and the p50 and p99 of its transactions' latency in milliseconds (from
    its per-transaction log, a `PGBENCH_SAMPLING` sample: what the c=4 p99 target compares
    authorize's p99 with)."""
    import psycopg

    with psycopg.connect(f"{PG}/{BENCH_DB}", autocommit=True) as conn:
        conn.execute(PGBENCH_SETUP.format(accounts=args.accounts))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT.format(accounts=args.accounts))
    logs = Path(tempfile.mkdtemp(prefix="bench-pgbench-"))
    output = subprocess.run(
        [
            "pgbench",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-n",
            "-c",
            str(concurrency),
            "-j",
            "2",
            "-T",
            str(int(args.duration)),
            "-f",
            script.name,
            "--log",
            f"--log-prefix={logs / 'pgbench'}",
            f"--sampling-rate={PGBENCH_SAMPLING}",
            BENCH_DB,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    # Each line: client, transaction, latency in microseconds, script, epoch seconds, us.
    latencies = [
        int(line.split()[2]) / 1e6
        for log in logs.iterdir()
        for line in log.read_text().splitlines()
    ]
    shutil.rmtree(logs)
    for line in output.splitlines():
        if line.startswith("tps =") and "without initial" in line:
            tps = float(line.split()[2])
            return tps, percentile(latencies, 0.50), percentile(latencies, 0.99)
    raise SystemExit(f"could not read pgbench's output:\n{output}")


# --- per-process comparisons -------------------------------------------------------------------


def time_per_call(
    contenders: dict[str, tuple[Any, list[Any]]], rounds: int = 5
) -> dict[str, float]:
    """Microseconds per call of each contender: the best of `rounds` passes over its items,
    the contenders' passes interleaved so that a burst of load from elsewhere on the machine
    hits all of them alike."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, (fn, items) in contenders.items():
            started = time.perf_counter()
            for item in items:
                fn(item)
            best[name] = min(best[name], (time.perf_counter() - started) / len(items))
    return {name: value * 1e6 for name, value in best.items()}


def compare_key_verification(keys: list[str]) -> dict[str, float]:
    from django.db import connection
    from rest_framework_api_key.models import APIKey

    from accounts import secrets
    from accounts.api_keys import api_key_is_well_formed, api_key_resolve

    theirs = [APIKey.objects.create_key(name=f"bench {n}")[1] for n in range(len(keys))]

    def ours(raw: str) -> bool:
        # What the hot path does: checksum first, then one indexed lookup by digest.
        if not api_key_is_well_formed(raw):
            return False
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, user_id, revoked_at, expires_at FROM accounts_apikey WHERE digest = %s",
                [secrets.digest(raw)],
            )
            row = cursor.fetchone()
        return row is not None and row[2] is None

    assert all(ours(k) for k in keys[:5]) and all(APIKey.objects.is_valid(k) for k in theirs[:5])
    result = time_per_call(
        {
            "ours_us": (ours, keys),
            "ours_orm_us": (api_key_resolve, keys),
            "drf_api_key_us": (APIKey.objects.is_valid, theirs),
        }
    )
    result["ratio"] = result["drf_api_key_us"] / result["ours_us"]
    print(
        f"  key verification: ours {result['ours_us']:.0f} us/call "
        f"(ORM api_key_resolve {result['ours_orm_us']:.0f} us), "
        f"djangorestframework-api-key is_valid {result['drf_api_key_us']:.0f} us/call "
        f"-> {result['ratio']:.1f}x"
    )
    return result


def compare_limiters(args: argparse.Namespace) -> dict[str, float]:
    from limits import RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter

    from credits import clock
    from credits.gateway.ratelimit import TierLimits, limiter_hit

    tier = TierLimits("bench", 1, None, (10**6, 10**7, 10**8))
    key_ids = [str(uuid.uuid4()) for _ in range(2000)]

    def ours(key_id: str) -> bool:
        return limiter_hit(key_id=key_id, tier=tier, now=clock.now()).allowed

    storage = RedisStorage(f"redis://127.0.0.1:6379/{args.redis_db}")
    limiter = FixedWindowRateLimiter(storage)
    items = [
        RateLimitItemPerMinute(10**6),
        RateLimitItemPerHour(10**7),
        RateLimitItemPerDay(10**8),
    ]

    def limits_same_semantics(key_id: str) -> bool:
        # Count the request only if all three windows have room: test all, then hit all.
        if not all(limiter.test(item, key_id) for item in items):
            return False
        for item in items:
            limiter.hit(item, key_id)
        return True

    def limits_hit_only(key_id: str) -> bool:
        # Cheaper but not the contract: a refused window still counts in the others.
        return all([limiter.hit(item, key_id) for item in items])

    result = time_per_call(
        {
            "ours_us": (ours, key_ids),
            "limits_us": (limits_same_semantics, key_ids),
            "limits_hit_only_us": (limits_hit_only, key_ids),
        }
    )
    result["ratio"] = result["limits_us"] / result["ours_us"]
    result["ratio_hit_only"] = result["limits_hit_only_us"] / result["ours_us"]
    print(
        f"  three-window limiter: ours {result['ours_us']:.0f} us/call (1 round trip), "
        f"limits test+hit {result['limits_us']:.0f} us/call (6 round trips) "
        f"-> {result['ratio']:.1f}x; limits hit-only {result['limits_hit_only_us']:.0f} us "
        f"-> {result['ratio_hit_only']:.1f}x"
    )
    return result


# --- checks after the run -----------------------------------------------------------------------


def check_ledger(charged_by_clients: int) -> dict[str, Any]:
    from credits.gateway.models import UsageRecord
    from credits.models import EntryKind, LedgerEntry
    from credits.reconciliation import reconcile

    discrepancies = reconcile()
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count()
    records = UsageRecord.objects.filter(charged=1).count()
    print(
        f"  reconcile: {'clean' if not discrepancies else discrepancies[:5]}; charge entries "
        f"{charges}, charged usage records {records}, successful settles seen by the clients "
        f"{charged_by_clients} -> "
        f"{'equal' if charges == records == charged_by_clients else 'DIFFERENT'}"
    )
    return {
        "reconcile_clean": not discrepancies,
        "charges": charges,
        "usage_records_charged": records,
        "successful_settles": charged_by_clients,
    }


# --- profile --------------------------------------------------------------------------------------


def profile(
    args: argparse.Namespace, server: subprocess.Popen[bytes], token: str, keys: list[str]
) -> int:
    """Profile one more run at concurrency 32; returns the credits it charged."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    out = Path(tempfile.gettempdir()) / "bench-gateway-profile.txt"
    seconds = max(5, int(args.duration / 2))
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(server.pid),
            "--subprocesses",
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    stats = drive(args.port, token, keys, 32, seconds)
    recorder.wait(timeout=60)
    if not out.exists():
        print("  (py-spy wrote no profile: is ptrace allowed?)")
    else:
        summarize_profile(out)
    return stats.charged


CATEGORIES = [
    ("waiting on PostgreSQL (socket read)", ("psycopg", "pgconn", "wait_c", "_wait")),
    ("Redis round trip", ("redis/",)),
    ("our views, decisions, limiter", ("credits/gateway/",)),
    ("Django request/response machinery", ("django/",)),
    ("json", ("json/",)),
]


def summarize_profile(path: Path) -> None:
    """Collapsed stacks from py-spy: attribute every sample to its innermost interesting
    frame category, and list the hottest leaf functions."""
    total = 0
    by_category: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1][:110]] += count
        category = "other (granian, Python runtime)"
        for frame in reversed(frames):
            hit = next(
                (name for name, needles in CATEGORIES if any(n in frame for n in needles)), None
            )
            if hit is not None:
                category = hit
                break
        by_category[category] += count
    if not total:
        print("  (empty profile)")
        return
    print(f"  profile of the workers ({total} samples of threads on CPU, all workers):")
    for name, count in by_category.most_common():
        print(f"    {100 * count / total:5.1f}%  {name}")
    print("  hottest innermost frames:")
    for name, count in leaves.most_common(12):
        print(f"    {100 * count / total:5.1f}%  {name}")


# --- main ---------------------------------------------------------------------------------------


def machine_speed_ms() -> float:
    """A CPU-bound yardstick: this machine's speed varies several-fold from day to day."""
    return 1000 * min(timeit.repeat("sum(range(10**6))", number=5, repeat=5)) / 5


def main() -> None:
    args = parse_args()
    global BATCHING
    if args.settle == "batch":
        BATCHING = {
            "flush_ms": args.flush_ms,
            "batch_max": args.batch_max,
            "connections": args.batch_connections,
        }
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(
        f"bench: {os.cpu_count()} CPUs; database {BENCH_DB}; redis db {args.redis_db}; "
        f"machine speed: sum(range(10**6)) in {machine_speed_ms():.1f} ms (the lower the faster; "
        "figures from runs with different speeds compare only as ratios to pgbench)"
    )
    reset_database()
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env=environment(args, "bench.settings"),
        check=True,
    )
    django_setup(args)
    keys, token = seed(args)
    print(f"seeded {args.accounts} accounts, {len(keys)} keys")
    results: dict[str, Any] = {"load": [], "pgbench": {}}
    server = start_server(args)
    print(
        f"server: {args.server}, {args.workers} workers x {args.threads} threads, WSGI "
        f"{args.app}, config.settings; load: Python asyncio, raw HTTP/1.1 keep-alive, "
        f"{args.duration:.0f} s per phase; settles "
        + (
            f"batched (every {args.flush_ms:g} ms or {args.batch_max} items, "
            f"{args.batch_connections} calls in flight)"
            if args.settle == "batch"
            else "one call each"
        )
    )
    charged = 0
    try:
        charged += drive(args.port, token, keys, 8, 2.0).charged  # warm up connections, caches
        for concurrency in concurrencies:
            backends = bench_backends()
            before = (
                cpu_seconds(process_tree(server.pid)),
                cpu_seconds(postgres_processes()),
                sum(os.times()[:2]),
                cpu_seconds(backends),
            )
            stats = drive(args.port, token, keys, concurrency, args.duration)
            after = (
                cpu_seconds(process_tree(server.pid)),
                cpu_seconds(postgres_processes()),
                sum(os.times()[:2]),
                cpu_seconds(sorted(set(backends) | set(bench_backends()))),
            )
            charged += stats.charged
            row = report_load(concurrency, stats)
            if stats.pairs:
                spent = [
                    1000 * cpu_between(before[0], after[0]) / stats.pairs,
                    1000 * cpu_between(before[1], after[1]) / stats.pairs,
                    1000 * (after[2] - before[2]) / stats.pairs,
                    1000 * cpu_between(before[3], after[3]) / stats.pairs,
                ]
                row["cpu_ms_per_pair"] = dict(
                    zip(["server", "postgres", "loadgen", "postgres_backends"], spent, strict=True)
                )
                print(
                    f"      CPU per pair: server (WSGI workers) {spent[0]:.2f} ms, PostgreSQL "
                    f"backends of {BENCH_DB} {spent[3]:.2f} ms (all its processes {spent[1]:.2f} "
                    f"ms: on a shared server, others' work too), load generator "
                    f"{spent[2]:.2f} ms; load average {os.getloadavg()[0]:.1f} on "
                    f"{os.cpu_count()} CPUs"
                )
            results["load"].append(row)
        if not args.no_profile:
            charged += profile(args, server, token, keys)
    finally:
        stop_server(server)
    print("after the run:")
    results["ledger"] = check_ledger(charged)
    if args.load_only:
        return
    print("ceiling (pgbench, same SQL shape: conditional balance update + ledger insert):")
    for row in results["load"]:
        tps, p50, p99 = pgbench(args, row["concurrency"])
        results["pgbench"][row["concurrency"]] = {"tps": tps, "p50_ms": p50, "p99_ms": p99}
        print(
            f"  c={row['concurrency']:<3} pgbench {tps:8.0f} tps, p50 {p50:.2f} ms p99 "
            f"{p99:.2f} ms; ours {row['pairs_per_s']:.0f} pairs/s = "
            f"{row['pairs_per_s'] / tps:.2f} of the ceiling; authorize p99 "
            f"{row['authorize_p99_ms']:.2f} ms = {row['authorize_p99_ms'] / p99:.1f}x pgbench's"
        )
    print("per-process comparisons:")
    results["keys"] = compare_key_verification(keys)
    results["limiter"] = compare_limiters(args)
    out = Path(tempfile.gettempdir()) / "bench-gateway.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"figures also written to {out}")
    print(
        "statistics: median pairs/s over phases "
        f"{statistics.median(r['pairs_per_s'] for r in results['load']):.0f}"
    )


if __name__ == "__main__":
    main()
