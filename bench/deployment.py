"""The README's multi-node deployment ("Past one machine", "Behind PgBouncer"), run for real on
this machine, each part on its own loopback port:

    .venv/bin/python bench/deployment.py                 # about a minute
    .venv/bin/python bench/deployment.py --duration 10 --concurrency 16

- PostgreSQL (the local server; a scratch database, `--database`, dropped and re-created);
- PgBouncer (Debian's, 1.18) in transaction mode in front of it, the session bounds set by its
  `connect_query`;
- Redis: its own `redis-server` (no persistence);
- two web nodes: `python -m config.serve internal` each (granian), with
  `DATABASE_PREPARED_STATEMENTS=0` and `DATABASE_STARTUP_OPTIONS=0`, through PgBouncer;
- HAProxy (Debian's) in front of both, probing `/readyz`;
- two Celery workers and one beat, through PgBouncer and on that Redis.

Then it checks `/readyz` through HAProxy (database, Redis, both Celery roles `ok`), drives
authorize+settle pairs through HAProxy with `bench/gateway.py`'s load generator, single settles
then batched ones, then single settles through one node (a second HAProxy frontend with one
server), then single settles to a third node of the same size that talks to PostgreSQL directly
(prepared statements on, no proxy in front: the baseline the issue's "within 15 % of one node
direct" is measured against), and checks the ledger: 0 errors, reconcile clean,
charges equal to the successful settles seen by the clients. `--faults` adds a phase through
HAProxy during which a web node is killed and started again, PgBouncer is restarted and a
Celery worker is killed and started again: calls in flight may fail, and it checks that every
settle a client saw charged has its one charge entry (0 lost), that no request is charged twice,
and counts the charges whose answer was lost with the killed node (a gateway's retry of that
settle replays it). Everything it started is stopped at the end (by process group).

Not part of the test suite: it measures and prints. Needs root for PgBouncer's user switch
(it refuses to run as root and runs as `postgres`) or a non-root user.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import gateway as load  # noqa: E402  (the load generator and the ledger check)

BIN = Path(sys.executable).parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
NO_PERSISTENCE = ["--save", "", "--appendonly", "no"]
TWO_NODES = "through HAProxy, two nodes, single settles"
ONE_NODE = "through HAProxy, one node, single settles"
DIRECT = "one node direct (no HAProxy, no PgBouncer), single settles"
WORKER = ["--concurrency", "1", "--without-mingle", "--without-gossip"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="billing_deploy")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4, help="blocking threads per web node")
    parser.add_argument("--pool-size", type=int, default=10, help="PgBouncer server connections")
    parser.add_argument("--base-port", type=int, default=18700, help="ports base .. base+6")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="then a phase that kills a web node, restarts PgBouncer and kills a worker",
    )
    parser.add_argument(
        "--redis-db", type=int, default=4, help="db of the shared Redis the seeding process uses"
    )
    return parser.parse_args()


class Deployment:
    """The processes started, stopped together (each in its own process group)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.folder / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self, name: str) -> None:
        if self.processes[name].poll() is not None:
            raise SystemExit(f"{name} exited:\n{(self.folder / f'{name}.log').read_text()}")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(what: str, ready: Any, deployment: Deployment, names: list[str]) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        for name in names:
            deployment.alive(name)
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up")
        time.sleep(0.3)


def answers(url: str) -> Any:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def pgbouncer_config(folder: Path, args: argparse.Namespace, port: int) -> Path:
    bounds = (
        "SET statement_timeout = 30000; SET lock_timeout = 5000; "
        "SET idle_in_transaction_session_timeout = 60000"
    )
    (folder / "users.txt").write_text('"postgres" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{args.database} = host={PG_HOST} port={PG_PORT} dbname={args.database} connect_query='{bounds}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
default_pool_size = {args.pool_size}
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
"""
    )
    return ini


def haproxy_config(folder: Path, ports: tuple[int, int], nodes: list[int], threads: int) -> Path:
    """Two frontends: `ports[0]` to both nodes, `ports[1]` to the first only (the one-node
    figure through the same proxy). granian's `--backpressure` (the node's threads) counts
    connections: a kept-alive server connection holds a slot while idle, and a connection
    beyond the slots waits until one closes (5 s later, the header read timeout). So HAProxy
    opens at most `threads` connections to a node, closes each after its answer
    (`http-server-close`; clients keep theirs), and queues the rest itself."""

    def servers(count: int) -> str:
        return "\n".join(
            f"    server node{n} 127.0.0.1:{node} check inter 1s fall 3 rise 1 maxconn {threads}"
            for n, node in enumerate(nodes[:count])
        )

    cfg = folder / "haproxy.cfg"
    cfg.write_text(
        f"""global
    maxconn 1000

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    timeout check 5s
    option http-keep-alive
    option http-server-close
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200

frontend gateway
    bind 127.0.0.1:{ports[0]}
    default_backend nodes

frontend single
    bind 127.0.0.1:{ports[1]}
    default_backend one

backend nodes
    balance roundrobin
{servers(2)}

backend one
{servers(1)}
"""
    )
    return cfg


def environment(args: argparse.Namespace, pgbouncer: int, redis: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONPATH": str(ROOT),
            "SECRET_KEY": "bench-only-secret-key-not-for-production",
            "DEBUG": "",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pgbouncer}/{args.database}",
            "DATABASE_PREPARED_STATEMENTS": "0",
            "DATABASE_STARTUP_OPTIONS": "0",
            "REDIS_URL": f"redis://127.0.0.1:{redis}/0",
            "HOST": "127.0.0.1",
            "INTERNAL_WORKERS": "1",
            "INTERNAL_THREADS": str(args.threads),
        }
    )
    return env


def phase(
    title: str, port: int, token: str, keys: list[str], args: argparse.Namespace, batch: bool
) -> dict[str, Any]:
    load.BATCHING = {"flush_ms": 10.0, "batch_max": 100, "connections": 4} if batch else None
    print(f"{title}:")
    stats = load.drive(port, token, keys, args.concurrency, args.duration)
    row = load.report_load(args.concurrency, stats)
    return row


def faults(
    deployment: Deployment,
    port: int,
    token: str,
    keys: list[str],
    args: argparse.Namespace,
    restart: dict[str, tuple[list[str], dict[str, str] | None]],
) -> dict[str, Any]:
    """A load phase through HAProxy during which a web node is killed (SIGKILL) and started
    again, PgBouncer is restarted, and a Celery worker is killed and started again. Calls in
    flight may fail (the gateway retries them or denies); what must hold is the ledger: every
    settle a client saw charged has exactly one charge entry, no request has two."""
    import threading

    from django.db.models import Count

    from credits.models import LedgerEntry

    def kill_and_restart(name: str, at: float, pause: float) -> None:
        time.sleep(at)
        process = deployment.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        print(f"      fault: {name} killed at {at:g} s")
        time.sleep(pause)
        deployment.start(name, *restart[name])
        print(f"      fault: {name} started again")

    load.BATCHING = None
    print(f"faults, through HAProxy, single settles ({max(args.duration, 8):g} s):")
    plan = [("web1", 1.0, 2.0), ("pgbouncer", 3.0, 0.5), ("worker0", 5.0, 0.5)]
    charges_before = LedgerEntry.objects.filter(kind="charge").count()
    threads = [threading.Thread(target=kill_and_restart, args=step) for step in plan]
    for thread in threads:
        thread.start()
    stats = load.drive(port, token, keys, args.concurrency, max(args.duration, 8))
    for thread in threads:
        thread.join()
    row = load.report_load(args.concurrency, stats)
    seen = [f"request:{request_id}" for request_id in stats.charged_ids]
    found = LedgerEntry.objects.filter(kind="charge", reference__in=seen).count()
    twice = (
        LedgerEntry.objects.filter(kind="charge")
        .values("reference")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    unseen = LedgerEntry.objects.filter(kind="charge").count() - charges_before - found
    row.update(lost=len(seen) - found, duplicated=twice, charged_unseen=unseen)
    print(
        f"      settles the clients saw charged: {len(seen)}, with their charge entry: {found} "
        f"(lost: {len(seen) - found}); requests charged twice: {twice}; charged but the answer "
        f"lost with a killed node or connection (a gateway's retry replays it): {unseen}"
    )
    return row


def main() -> None:
    args = parse_args()
    for tool in ("pgbouncer", "haproxy", "redis-server"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install -y {tool})")
    ports = list(range(args.base_port, args.base_port + 7))
    pgbouncer_port, redis_port, haproxy_port, single_port, direct_port, *node_ports = ports
    folder = Path(tempfile.mkdtemp(prefix="bench-deployment-"))
    folder.chmod(0o755)
    deployment = Deployment(folder)
    results: dict[str, Any] = {}
    try:
        # The database, migrated and seeded directly (not through PgBouncer: DDL and the seed
        # are not the hot path), by bench/gateway.py's own helpers.
        load.BENCH_DB = args.database
        load.reset_database()
        seed_args = argparse.Namespace(redis_db=args.redis_db, accounts=args.accounts, keys=2)
        direct = load.environment(seed_args, "bench.settings")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=direct, check=True
        )
        load.django_setup(seed_args)
        keys, token = load.seed(seed_args)
        print(f"seeded {args.accounts} accounts, {len(keys)} keys in {args.database}")

        ini = pgbouncer_config(folder, args, pgbouncer_port)
        for path in folder.iterdir():
            path.chmod(0o644)
        as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
        pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        restart: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "pgbouncer": ([pgbouncer, *as_user, str(ini)], None)
        }
        deployment.start("pgbouncer", *restart["pgbouncer"])
        deployment.start(
            "redis",
            ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), *NO_PERSISTENCE],
        )
        env = environment(args, pgbouncer_port, redis_port)
        for n, port in enumerate(node_ports):
            restart[f"web{n}"] = (
                [sys.executable, "-m", "config.serve", "internal"],
                {**env, "INTERNAL_PORT": str(port)},
            )
            deployment.start(f"web{n}", *restart[f"web{n}"])
        # The baseline node: same size, straight to PostgreSQL (prepared statements and the
        # startup options on, as a single-machine deployment runs), nothing in front.
        deployment.start(
            "direct",
            [sys.executable, "-m", "config.serve", "internal"],
            {
                **env,
                "INTERNAL_PORT": str(direct_port),
                "DATABASE_URL": f"postgres://postgres@{PG_HOST}:{PG_PORT}/{args.database}",
                "DATABASE_PREPARED_STATEMENTS": "",
                "DATABASE_STARTUP_OPTIONS": "",
            },
        )
        celery = str(BIN / "celery")
        for n in range(2):
            restart[f"worker{n}"] = (
                [celery, "-A", "config", "worker", "-l", "warning", "-n", f"worker{n}@%h", *WORKER],
                env,
            )
            deployment.start(f"worker{n}", *restart[f"worker{n}"])
        deployment.start(
            "beat",
            [celery, "-A", "config", "beat", "-l", "warning", "-s", str(folder / "beat")],
            env,
        )
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        cfg = haproxy_config(folder, (haproxy_port, single_port), node_ports, args.threads)
        deployment.start("haproxy", [haproxy, "-db", "-f", str(cfg)])
        for port in [*node_ports, direct_port]:
            wait_for(
                f"web node on {port}",
                answers(f"http://127.0.0.1:{port}/livez"),
                deployment,
                list(deployment.processes),
            )
        front = f"http://127.0.0.1:{haproxy_port}"

        def celery_ready() -> bool:
            try:
                checks = httpx.get(f"{front}/readyz", timeout=2).json().get("checks", {})
            except (httpx.HTTPError, ValueError):
                return False
            return bool(checks.get("celery_workers") == checks.get("celery_beat") == "ok")

        try:
            wait_for("Celery", celery_ready, deployment, list(deployment.processes))
        except SystemExit:
            print(httpx.get(f"http://127.0.0.1:{node_ports[0]}/readyz", timeout=2).text)
            for name in ("worker0", "beat", "haproxy"):
                print(name, (folder / f"{name}.log").read_text()[-1500:])
            raise
        readiness = httpx.get(f"{front}/readyz", timeout=2).json()
        print(f"through HAProxy: /readyz {json.dumps(readiness)}")
        results["readyz"] = readiness
        print(
            f"deployment: PgBouncer :{pgbouncer_port} (transaction mode, pool "
            f"{args.pool_size}), Redis :{redis_port}, web nodes :{node_ports[0]} and "
            f":{node_ports[1]} (1 granian worker x {args.threads} threads each), HAProxy "
            f":{haproxy_port}, 2 Celery workers, 1 beat; load: c={args.concurrency}, "
            f"{args.duration:g} s per phase"
        )
        charged = 0
        rows = {}
        for title, port, batch in [
            (TWO_NODES, haproxy_port, False),
            ("through HAProxy, two nodes, batched settles", haproxy_port, True),
            (ONE_NODE, single_port, False),
            (DIRECT, direct_port, False),
        ]:
            rows[title] = phase(title, port, token, keys, args, batch)
            charged += rows[title]["charged"]
        results["load"] = rows
        if args.faults:
            rows["faults"] = faults(deployment, haproxy_port, token, keys, args, restart)
            charged += rows["faults"]["charged"]
            wait_for(
                "the restarted web node",
                answers(f"http://127.0.0.1:{node_ports[1]}/livez"),
                deployment,
                list(deployment.processes),
            )
        for name in deployment.processes:
            deployment.alive(name)
        print("after the run:")
        results["ledger"] = load.check_ledger(charged)
        errors = sum(row["errors"] for title, row in rows.items() if title != "faults")
        two, one, direct = (rows[title] for title in (TWO_NODES, ONE_NODE, DIRECT))

        def over(row: dict[str, Any], base: dict[str, Any]) -> float:
            return row["pairs_per_s"] / base["pairs_per_s"] if base["pairs_per_s"] else float("nan")

        print(
            f"  errors {errors}; two nodes through HAProxy + PgBouncer at "
            f"{over(two, direct):.2f} of one node direct's pairs/s, one node through them at "
            f"{over(one, direct):.2f} (on 2 shared cores the nodes compete for the same CPUs)"
        )
        results["errors"] = errors
        results["two_nodes_over_one"] = over(two, one)
        results["two_nodes_over_direct"] = over(two, direct)
        results["one_node_over_direct"] = over(one, direct)
        out = Path(tempfile.gettempdir()) / "bench-deployment.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"figures also written to {out}")
    finally:
        deployment.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
