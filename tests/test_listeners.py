"""The production web processes (`config.serve`) under hostile clients, over real HTTP on
loopback against the test database (issue 15, items 3 and 4):

- clients that send their bodies slowly pin every thread of the public listener, and the
  gateway's authorize, on its own listener, keeps answering within its budget;
- a socket that never finishes its headers is dropped after the header read timeout;
- a burst of many more concurrent clients than threads opens no more database connections than
  threads, and the service answers normally right after it.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
from django.conf import settings
from django.db import connection

from accounts.service_tokens import service_token_create
from config.serve import command
from tests.gateway.conftest import funded_customer
from tests.processes import database_url, free_port

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 0.25
THREADS = 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="production settings"),
]


@dataclass
class Service:
    public: int
    internal: int
    token: str
    key: str


def _request(port: int, raw: bytes, timeout: float) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post(port: int, path: str, body: dict[str, object], token: str, timeout: float = 5) -> dict:
    payload = json.dumps(body).encode()
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    status, answer = _request(port, raw, timeout)
    assert status == 200, (status, answer[:300])
    parsed: dict = json.loads(answer)
    return parsed


def _healthz(port: int, timeout: float) -> int:
    raw = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    return _request(port, raw, timeout)[0]


@pytest.fixture
def service(transactional_db: None, tmp_path: Path) -> Iterator[Service]:
    customer = funded_customer(20_000)  # tier 10,000+: 500 a minute
    _, token = service_token_create(name=f"listeners-{uuid4().hex[:6]}")
    public, internal = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "test-only",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": "",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STRIPE_SECRET_KEY": "sk_test_listeners",
        "STRIPE_WEBHOOK_SECRET": "whsec_listeners",
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "PORT": str(public),
        "INTERNAL_PORT": str(internal),
        "WEB_WORKERS": "1",
        "WEB_THREADS": str(THREADS),
        "INTERNAL_WORKERS": "1",
        "INTERNAL_THREADS": str(THREADS),
        "HEADER_READ_TIMEOUT_MS": "1000",
    }
    granian = str(ROOT / ".venv" / "bin" / "granian")
    servers = [
        subprocess.Popen(
            command(name, env, granian=granian),
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=(tmp_path / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for name in ("public", "internal")
    ]
    try:
        for port in (public, internal):
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _healthz(port, timeout=2) == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "public.log").read_text()
                time.sleep(0.3)
        yield Service(public, internal, token, customer.raw_key)
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


def _authorize_and_settle(service: Service, port: int) -> float:
    request_id = f"req-{uuid4().hex}"
    started = time.monotonic()
    allowed = _post(
        port,
        "/internal/v1/authorize",
        {"api_key": service.key, "request_id": request_id, "model": "m", "format": "openai"},
        service.token,
    )
    elapsed = time.monotonic() - started
    assert allowed["allowed"] is True, allowed
    settled = _post(
        port,
        "/internal/v1/settle",
        {"request_id": request_id, "outcome": "failure", "reason": "client_error"},
        service.token,
    )
    assert settled["charged"] == 0
    return elapsed


def _slow_bodies(port: int, count: int) -> list[socket.socket]:
    """Webhook deliveries that announce 1,000 bytes and send one: each holds a thread."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(
            b"POST /api/webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        sockets.append(sock)
    return sockets


def test_authorize_keeps_answering_while_slow_clients_hold_the_public_listener(
    service: Service,
) -> None:
    _authorize_and_settle(service, service.internal)  # warm-up
    attackers = _slow_bodies(service.public, 10 * THREADS)
    try:
        time.sleep(0.5)
        # The attack bites: the public listener's threads are all held.
        with pytest.raises(OSError):
            _healthz(service.public, timeout=1.0)
        slowest = max(_authorize_and_settle(service, service.internal) for _ in range(10))
    finally:
        for sock in attackers:
            sock.close()
    assert slowest < BUDGET, f"authorize took {slowest * 1000:.0f} ms under the attack"


def test_a_socket_that_never_finishes_its_headers_is_dropped(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.public), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        started = time.monotonic()
        data = sock.recv(1024)  # the server's answer (408) or its close
        waited = time.monotonic() - started
    assert waited < 3.0, f"held {waited:.1f} s"
    assert data == b"" or data.startswith(b"HTTP/1.1 408")


def _server_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        (count,) = cursor.fetchone()
    return int(count)


def test_a_burst_opens_no_more_connections_than_threads_and_the_service_recovers_at_once(
    service: Service,
) -> None:
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        try:
            while not stop.is_set():
                peak = max(peak, _server_connections())
                time.sleep(0.05)
        finally:
            connection.close()  # this thread's own

    watcher = threading.Thread(target=watch)
    watcher.start()
    errors: list[BaseException] = []

    def client(_: int) -> None:
        try:
            _authorize_and_settle(service, service.internal)
        except BaseException as exc:
            errors.append(exc)

    try:
        with ThreadPoolExecutor(max_workers=40) as pool:  # 40 clients, 2 server threads
            list(pool.map(client, range(200)))
    finally:
        stop.set()
        watcher.join()

    assert errors == []
    # The watcher's own connection is excluded; the public listener's health checks add one.
    assert peak <= 2 * THREADS, f"{peak} connections for {2 * THREADS} threads"
    slowest = max(_authorize_and_settle(service, service.internal) for _ in range(5))
    assert slowest < BUDGET
