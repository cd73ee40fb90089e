"""Benchmark of notification delivery (issue 17): the time from an event's commit to its
webhook arriving at a receiver, p50/p99 over 1,000 events.

The dispatcher runs as in production: a real Celery worker (`celery -A config worker`, prefork,
on the Redis broker of REDIS_URL) started by this script, fed by the after-commit kick. This
process commits the events (`event_record` inside `transaction.atomic()`, one transaction per
event, paced at `--rate` per second) and runs the receiver: an `http.server` on loopback that
verifies each Standard Webhooks signature and notes the arrival time of each `webhook-id`.

Needs PostgreSQL and Redis. Runs in its own throwaway database
(`<DATABASE_URL's name>_notifications_bench`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/billing REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/notifications.py [--events 1000] [--rate 10] [--concurrency 2]
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
os.environ["WEBHOOK_ALLOW_PRIVATE"] = "1"  # the receiver is on loopback, over http
if not os.environ.get("REDIS_URL"):
    sys.exit("bench/notifications.py needs Redis (the broker): set REDIS_URL=redis://...")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

from accounts.models import User  # noqa: E402
from config.celery import app  # noqa: E402
from credits.events import event_record  # noqa: E402
from credits.models import Event  # noqa: E402
from credits.notifications import services  # noqa: E402

arrivals: dict[str, float] = {}
bad_signatures = 0
lock = threading.Lock()


def receiver(secret: str) -> ThreadingHTTPServer:
    webhook = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            global bad_signatures
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            arrived = time.time()
            try:
                payload = webhook.verify(body, dict(self.headers.items()))
            except Exception:
                with lock:
                    bad_signatures += 1
                self.send_response(400)
            else:
                with lock:
                    arrivals.setdefault(payload["id"], arrived)
                self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_worker(database_name: str, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{database_name}",
        "CELERY_BROKER_URL": os.environ["REDIS_URL"],
    }
    return subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "config",
            "worker",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="events committed per second")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/notifications.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    from django.test.utils import setup_test_environment

    setup_test_environment()
    base = connection.settings_dict["NAME"]
    name = f"{base}_notifications_bench"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    app.control.purge()
    log = Path(f"/tmp/bench-notifications-worker-{os.getpid()}.log")
    worker = start_worker(name, args.concurrency, log)
    server = None
    try:
        user = User.objects.create_user("bench-notifications@example.com", "bench-password-1")
        endpoint, secret = services.webhook_endpoint_create(
            user=user, url="http://127.0.0.1:9/placeholder", events=None
        )
        server = receiver(secret)
        endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        endpoint.save(update_fields=["url"])
        time.sleep(5)  # the worker boots (Django setup, broker connection)

        committed: dict[str, float] = {}
        gap = 1 / args.rate
        started = time.perf_counter()
        for i in range(args.events):
            with transaction.atomic():
                event_record(
                    user_id=user.pk,
                    type="credits.low",
                    data={"balance": i, "threshold": 10},
                    cause=f"bench:{i}",
                )
            committed[f"bench:{i}"] = time.time()
            time.sleep(max(0.0, started + (i + 1) * gap - time.perf_counter()))
        ids = dict(Event.objects.values_list("cause", "id"))
        deadline = time.monotonic() + args.timeout
        while len(arrivals) < args.events and time.monotonic() < deadline:
            time.sleep(0.1)

        latencies = [
            (arrivals[f"evt_{ids[cause].hex}"] - at) * 1000
            for cause, at in committed.items()
            if f"evt_{ids[cause].hex}" in arrivals
        ]
        print(
            f"{len(latencies)}/{args.events} events delivered ({bad_signatures} bad signatures), "
            f"committed at {args.rate:g}/s, worker concurrency {args.concurrency}"
        )
        if latencies:
            print(
                f"commit -> webhook received, ms: p50 {percentile(latencies, 50):.1f}  "
                f"p90 {percentile(latencies, 90):.1f}  p99 {percentile(latencies, 99):.1f}  "
                f"max {max(latencies):.1f}  mean {statistics.mean(latencies):.1f}"
            )
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if server is not None:
            server.shutdown()
        app.control.purge()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
