"""Faults during load: authorize+settle traffic while Redis stops, PostgreSQL restarts and a
web worker is killed; then proof that every success was charged exactly once.

    .venv/bin/python bench/faults.py                 # three scenarios, about 2 minutes
    .venv/bin/python bench/faults.py --duration 8    # shorter

Loopback only, and nothing shared is touched: a throwaway PostgreSQL cluster (initdb into a
temporary directory, port `--pg-port`, default 5440) and a separate redis-server (port
`--redis-port`, default 6390) are started for the run and removed afterwards, so the engineers'
PostgreSQL on 5432 and Redis on 6379 never see an outage. The server is started as production
runs it by bench/gateway.py's `start_server` (gunicorn, gthread workers, `config.settings`,
the hot-path WSGI entry point), with `HOLD_TTL_SECONDS=5`.

The load generator plays the gateway: each end-user request has one `request_id`; authorize
is retried with the same id on an error, a 5xx or a timeout (the first answer that is a
decision counts), then settle (`success`, or `failure` for one request in ten) is retried the
same way until it answers 200. Scenarios, each `--duration` seconds of load at
`--concurrency`, the fault injected after a third of it:

- `redis`: redis-server is shut down (`shutdown nosave`) for `--outage` seconds, then started;
- `postgres`: the cluster is restarted with `pg_ctl restart -m immediate` (a crash: recovery
  replays the WAL), after being down for `--outage` seconds;
- `worker`: one gunicorn worker is sent SIGKILL (twice, a few seconds apart; the master forks
  new ones).

Afterwards it waits past the hold lifetime, runs the sweep (`accounts_sweep`), and prints per
scenario: requests, HTTP attempts, allowed, successes settled (answered `charged: 1`), charge
entries in the ledger for that scenario's request ids, duplicates (a request id charged more
than once), lost (a success answered `charged: 1` without a charge entry, or a charge for a
request settled as a failure or never allowed), holds still live, and whether the credits add
up (granted - charged = balance on every account, nothing reserved) and `reconcile()` is clean.
Not part of the test suite: it measures and prints; the exit status is 1 if anything is off.
"""

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# bench/gateway.py: the server start, the seed and the process helpers.
import gateway as bench_gateway

ROOT = bench_gateway.ROOT
PYTHON = bench_gateway.PYTHON
GRANT = 1_000_000
HOLD_TTL = 5
METRICS_DIR = Path(tempfile.mkdtemp(prefix="faults-metrics-"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per scenario")
    parser.add_argument(
        "--outage", type=float, default=4.0, help="seconds Redis/PostgreSQL are down"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--port", type=int, default=8775)
    parser.add_argument("--pg-port", type=int, default=5440)
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--scenarios", default="redis,postgres,worker")
    args = parser.parse_args()
    # What bench/gateway.py's start_server and seed read.
    args.server = "gunicorn"
    args.app = "credits.gateway.wsgi:application"
    args.redis_db = 0
    return args


# --- the throwaway PostgreSQL cluster and Redis -------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise SystemExit(f"{name} not found under /usr/lib/postgresql")
    return str(found[-1])


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.options = (
            f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=60"
        )

    def ctl(self, *action: str) -> None:
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    self.options,
                    "-w",
                    *action,
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="faults-redis-"))

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--pidfile",
                str(self.dir / "redis.pid"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(50):
            if self.ping():
                return
            time.sleep(0.1)
        raise SystemExit(f"redis-server on {self.port} did not come up")

    def ping(self) -> bool:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
        )
        return done.stdout.strip() == "PONG"

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def use_private_services(args: argparse.Namespace) -> None:
    """Aim bench/gateway.py's helpers at our own cluster and Redis, with short holds."""
    bench_gateway.PG = f"postgres://postgres@127.0.0.1:{args.pg_port}"
    bench_gateway.BENCH_DB = "billing_faults"
    original = bench_gateway.environment

    def environment(args: argparse.Namespace, settings: str) -> dict[str, str]:
        env = original(args, settings)
        env["REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
        env["HOLD_TTL_SECONDS"] = str(HOLD_TTL)
        env["LOG_LEVEL"] = "CRITICAL"  # an outage logs a traceback per failed call
        # The workers' counters add up in /metrics (prometheus_client's multiprocess mode).
        env["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
        return env

    bench_gateway.environment = environment


# --- the gateway-like load generator --------------------------------------------------------


@dataclass
class Scenario:
    name: str
    requests: int = 0
    attempts: int = 0
    allowed: set[str] = field(default_factory=set)
    denied: Counter[str] = field(default_factory=Counter)
    never_decided: int = 0
    charged_answers: set[str] = field(default_factory=set)  # settle answered charged: 1
    uncharged_answers: set[str] = field(default_factory=set)  # success answered charged: 0
    failures_settled: set[str] = field(default_factory=set)
    never_settled: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)


async def _post(client: Any, path: str, body: dict[str, Any], sc: Scenario) -> Any | None:
    """One attempt: the JSON answer of a 200 or 4xx, or None (error, 5xx, timeout)."""
    import httpx

    sc.attempts += 1
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        sc.errors[f"{path.rsplit('/', 1)[1]}: {type(exc).__name__}"] += 1
        return None
    if response.status_code >= 500:
        sc.errors[f"{path.rsplit('/', 1)[1]}: HTTP {response.status_code}"] += 1
        return None
    if response.status_code != 200:
        sc.errors[f"{path.rsplit('/', 1)[1]}: HTTP {response.status_code}"] += 1
    return response.json()


async def _with_retries(
    client: Any, path: str, body: dict[str, Any], sc: Scenario, give_up_at: float
) -> Any | None:
    delay = 0.05
    while True:
        answer = await _post(client, path, body, sc)
        if answer is not None:
            return answer
        if time.monotonic() > give_up_at:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _gateway(
    port: int, token: str, keys: list[str], stop_at: float, sc: Scenario, tag: str
) -> None:
    import httpx

    rng = random.Random(tag)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(2.0),
    ) as client:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            request_id = f"{sc.name}-{tag}-{n}"
            sc.requests += 1
            # A gateway would give up much sooner (its budget is ~250 ms) and answer 503; the
            # retries here are what makes a lost answer visible: the same id must replay.
            give_up_at = time.monotonic() + 20
            decision = await _with_retries(
                client,
                "/internal/v1/authorize",
                {
                    "api_key": rng.choice(keys),
                    "request_id": request_id,
                    "model": "kimi-k2",
                    "format": "openai",
                },
                sc,
                give_up_at,
            )
            if decision is None or "allowed" not in decision:
                sc.never_decided += 1
                continue
            if not decision["allowed"]:
                sc.denied[str(decision.get("status"))] += 1
                continue
            sc.allowed.add(request_id)
            success = rng.random() >= 0.1
            settle = {
                "request_id": request_id,
                "outcome": "success" if success else "failure",
                "http_status": 200 if success else 502,
                "model": "kimi-k2",
                "usage": {"prompt_tokens": 25, "completion_tokens": 189} if success else None,
                "reason": None if success else "upstream_error",
            }
            answer = await _with_retries(client, "/internal/v1/settle", settle, sc, give_up_at)
            if answer is None or "charged" not in answer:
                sc.never_settled.add(request_id)
            elif not success:
                sc.failures_settled.add(request_id)
            elif answer["charged"] == 1:
                sc.charged_answers.add(request_id)
            else:
                sc.uncharged_answers.add(request_id)


def drive(args: argparse.Namespace, token: str, keys: list[str], sc: Scenario) -> float:
    stop_at = time.monotonic() + args.duration

    async def main() -> None:
        await asyncio.gather(
            *(
                _gateway(args.port, token, keys, stop_at, sc, f"{uuid.uuid4().hex[:6]}{c}")
                for c in range(args.concurrency)
            )
        )

    started = time.monotonic()
    asyncio.run(main())
    return time.monotonic() - started


# --- faults -------------------------------------------------------------------------------------


def inject(
    args: argparse.Namespace,
    sc: Scenario,
    server: subprocess.Popen[bytes],
    cluster: Cluster,
    redis: RedisServer,
) -> None:
    time.sleep(args.duration / 3)
    t0 = time.monotonic()
    if sc.name == "redis":
        redis.stop()
        sc.events.append(f"redis down (ping {'PONG' if redis.ping() else 'refused'})")
        time.sleep(args.outage)
        redis.start()
        sc.events.append(f"redis up after {time.monotonic() - t0:.1f} s")
    elif sc.name == "postgres":
        cluster.ctl("stop", "-m", "immediate")
        sc.events.append("postgres stopped (-m immediate: a crash)")
        time.sleep(args.outage)
        cluster.ctl("start")
        sc.events.append(f"postgres up after {time.monotonic() - t0:.1f} s (crash recovery)")
    elif sc.name == "worker":
        for round_ in range(2):
            workers = [pid for pid in bench_gateway.process_tree(server.pid) if pid != server.pid]
            victim = random.choice(workers)
            os.kill(victim, signal.SIGKILL)
            sc.events.append(f"SIGKILL worker {victim} (of {len(workers)})")
            if round_ == 0:
                time.sleep(args.duration / 4)


def run_scenario(
    args: argparse.Namespace,
    name: str,
    token: str,
    keys: list[str],
    server: subprocess.Popen[bytes],
    cluster: Cluster,
    redis: RedisServer,
) -> Scenario:
    import threading

    sc = Scenario(name)
    fault = threading.Thread(target=inject, args=(args, sc, server, cluster, redis))
    fault.start()
    elapsed = drive(args, token, keys, sc)
    fault.join()
    print(f"  {name}: {sc.requests} requests in {elapsed:.1f} s; " + "; ".join(sc.events))
    return sc


# --- the proof ---------------------------------------------------------------------------------


def scrape_metrics(args: argparse.Namespace, token: str) -> dict[str, float]:
    """`/metrics` as the scraper sees it: every worker's counters, killed ones included."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(10):
        # A worker's first request after the PostgreSQL restart meets its dead connection (503).
        response = httpx.get(
            f"http://127.0.0.1:{args.port}/metrics",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        if response.status_code == 200:
            break
        time.sleep(0.2)
    response.raise_for_status()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{label}}}"] = sample.value
    return values


def report_metrics(metrics: dict[str, float], scenarios: list[Scenario]) -> None:
    from credits.models import Hold

    allowed = metrics.get("billing_authorizations_total{decision=allowed}", 0)
    holds = Hold.objects.count()
    seen = sum(len(sc.allowed) for sc in scenarios)
    print(
        f"metrics (all workers, multiprocess mode): authorizations allowed {allowed:.0f}, "
        f"holds in the database {holds}, allowed requests seen by the gateway {seen} -> "
        + ("equal" if allowed == holds == seen else f"{holds - allowed:.0f} short")
        + " (a worker SIGKILLed between committing a hold and counting it loses that count)"
    )
    for name, value in sorted(metrics.items()):
        if name.startswith(("billing_authorizations", "billing_settles")):
            print(f"  {name} {value:.0f}")


def verify(scenarios: list[Scenario]) -> bool:
    from django.db import connections
    from django.db.models import Sum

    from credits import services
    from credits.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry
    from credits.reconciliation import reconcile

    connections.close_all()  # ours went down with the PostgreSQL restart
    print(f"\nwaiting {HOLD_TTL + 1} s (past the hold lifetime), then the sweep ...")
    time.sleep(HOLD_TTL + 1)
    swept = 0
    while True:
        done = services.accounts_sweep(limit=500)
        swept += done
        if done < 500:
            break
    holds = {str(pk): r for pk, r in Hold.objects.values_list("pk", "request_id")}
    charges: Counter[str] = Counter()
    for reference in LedgerEntry.objects.filter(kind=EntryKind.CHARGE).values_list(
        "reference", flat=True
    ):
        # The SQL backend writes `charge:<hold id>`, the services `request:<request id>`.
        kind, _, value = reference.partition(":")
        if kind == "charge":
            charges[holds.get(value, f"?{value}")] += 1
        else:
            charges[value] += 1
    live = Counter(
        r.split("-", 1)[0]
        for r in Hold.objects.filter(status=HoldStatus.LIVE).values_list("request_id", flat=True)
    )
    accounts = CreditAccount.objects.aggregate(balance=Sum("balance"), reserved=Sum("reserved"))
    discrepancies = reconcile()
    total_charges = sum(charges.values())
    granted = GRANT * CreditAccount.objects.count()
    adds_up = accounts["balance"] == granted - total_charges and accounts["reserved"] == 0

    header = (
        f"{'scenario':<9} {'requests':>8} {'attempts':>8} {'allowed':>7} {'success':>7} "
        f"{'charges':>7} {'dupl':>4} {'lost':>4} {'unsettl':>7} {'holds':>5}  "
        "errors seen by the gateway"
    )
    print(f"\nswept {swept} account(s)\n{header}")
    ok = True
    for sc in scenarios:
        mine = {r: n for r, n in charges.items() if r.startswith(sc.name + "-")}
        duplicates = sum(1 for n in mine.values() if n > 1)
        lost = len([r for r in sc.charged_answers if mine.get(r, 0) != 1])
        # A charge nobody may have: a failure, a denial, or a success answered charged: 0.
        wrongly = [
            r
            for r in mine
            if r in sc.failures_settled or r in sc.uncharged_answers or r not in sc.allowed
        ]
        unsettled_charged = sum(1 for r in sc.never_settled if r in mine)
        errors = ", ".join(f"{n} x {what}" for what, n in sc.errors.most_common(4)) or "none"
        print(
            f"{sc.name:<9} {sc.requests:>8} {sc.attempts:>8} {len(sc.allowed):>7} "
            f"{len(sc.charged_answers):>7} {sum(mine.values()):>7} {duplicates:>4} "
            f"{lost + len(wrongly):>4} {len(sc.never_settled):>7} "
            f"{live.get(sc.name, 0):>5}  {errors}"
        )
        if sc.uncharged_answers or sc.never_decided or sc.denied:
            print(
                f"{'':<9} successes answered charged 0: {len(sc.uncharged_answers)}, "
                f"never decided: {sc.never_decided}, denied: {dict(sc.denied)}, "
                f"unsettled but charged: {unsettled_charged}"
            )
        ok = ok and not duplicates and not lost and not wrongly and not live.get(sc.name, 0)
        ok = ok and sum(mine.values()) == len(sc.charged_answers) + unsettled_charged
    print(
        f"\ncredits: granted {granted}, charged {total_charges}, balance {accounts['balance']}, "
        f"reserved {accounts['reserved']} -> {'adds up' if adds_up else 'DOES NOT ADD UP'}"
    )
    print(f"reconcile: {'clean' if not discrepancies else discrepancies[:5]}")
    return ok and adds_up and not discrepancies


def start_and_seed(
    args: argparse.Namespace, cluster: Cluster, redis: RedisServer
) -> tuple[list[str], str]:
    """Start the private cluster and Redis, migrate the bench database, seed it."""
    cluster.ctl("start")
    redis.start()
    bench_gateway.reset_database()
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env=bench_gateway.environment(args, "bench.settings"),
        check=True,
    )
    bench_gateway.django_setup(args)
    return bench_gateway.seed(args)


def main() -> None:
    args = parse_args()
    use_private_services(args)
    cluster = Cluster(args.pg_port)
    redis = RedisServer(args.redis_port)
    server = None
    try:
        keys, token = start_and_seed(args, cluster, redis)
        server = bench_gateway.start_server(args)
        print(
            f"faults: gunicorn {args.workers} workers x {args.threads} threads on "
            f"{args.app}; PostgreSQL cluster on {args.pg_port}, redis-server on "
            f"{args.redis_port}; HOLD_TTL_SECONDS={HOLD_TTL}; {args.accounts} accounts x "
            f"{args.keys} keys; concurrency {args.concurrency}, {args.duration:.0f} s per "
            f"scenario, outages {args.outage:.0f} s"
        )
        scenarios = [
            run_scenario(args, name, token, keys, server, cluster, redis)
            for name in args.scenarios.split(",")
        ]
        metrics = scrape_metrics(args, token)
        ok = verify(scenarios)
        report_metrics(metrics, scenarios)
    finally:
        if server is not None:
            bench_gateway.stop_server(server)
        from django.db import connections

        connections.close_all()
        redis.remove()
        cluster.remove()
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
    print("\nRESULT: " + ("every success charged exactly once, nothing lost" if ok else "PROBLEMS"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
