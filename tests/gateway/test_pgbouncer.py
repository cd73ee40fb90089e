"""The hot path behind a real PgBouncer (Debian 12's 1.18) in transaction mode, on a loopback
port: with `DATABASE_PREPARED_STATEMENTS=0` and `DATABASE_STARTUP_OPTIONS=0` (README, "Behind
PgBouncer") every authorize, settle and batch settle answers, while four client connections
share one server connection; with prepared statements left on, the same load fails, which is
what the setting is for. The session bounds come from PgBouncer's `connect_query`."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts.service_tokens import service_token_create
from config.serve import command
from credits.gateway.models import UsageRecord
from credits.models import LedgerEntry
from credits.reconciliation import reconcile
from tests import concurrency
from tests.gateway.conftest import funded_customer
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
CLIENT_THREADS = 4  # the service's database connections: 2 workers x 2 threads
PAIRS_PER_THREAD = 6
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-At"]
BOUNDS = "SET statement_timeout = 30000; SET lock_timeout = 5000"


@dataclass
class Bouncer:
    port: int
    log: Path

    def admin(self, command: str) -> list[list[str]]:
        """Rows of a command of PgBouncer's admin console (simple query protocol: psql)."""
        output = psql(self.port, "pgbouncer", command)
        return [line.split("\t") for line in output.splitlines() if line]


def psql(port: int, database: str, command: str) -> str:
    """What psql prints for `command` (unaligned, tab-separated) through PgBouncer's port."""
    return subprocess.run(
        [*PSQL, "-p", str(port), "-F", "\t", "-c", command, database],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout


@pytest.fixture
def pgbouncer() -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the test database: one server connection for
    every client, session bounds set on it by `connect_query`."""
    if not os.path.exists(PGBOUNCER):
        pytest.fail(
            "pgbouncer is not installed (apt-get install -y pgbouncer; the README's test "
            "command installs it)"
        )
    db = connection.settings_dict
    port = free_port()
    # PgBouncer refuses to run as root: it switches to `postgres`, which must read its files.
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{db["USER"]}" ""\n')
    server = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} dbname={db['NAME']}"
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
{db["NAME"]} = {server} pool_size=1 connect_query='{BOUNDS}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
admin_users = {db["USER"]}
pool_mode = transaction
max_client_conn = 50
ignore_startup_parameters = extra_float_digits
"""
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    log = folder / "pgbouncer.log"
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [PGBOUNCER, *as_user, str(folder / "pgbouncer.ini")],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bouncer = Bouncer(port, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                bouncer.admin("SHOW VERSION")
                break
            except subprocess.CalledProcessError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield bouncer
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def start_service(
    bouncer: Bouncer, *, prepared: bool, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    db = connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "test-only",
        "DATABASE_URL": f"postgres://{db['USER']}@127.0.0.1:{bouncer.port}/{db['NAME']}",
        "DATABASE_PREPARED_STATEMENTS": "1" if prepared else "0",
        "DATABASE_STARTUP_OPTIONS": "0",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": "",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "INTERNAL_PORT": str(port),
        "INTERNAL_WORKERS": "2",
        "INTERNAL_THREADS": str(CLIENT_THREADS // 2),
    }
    granian = str(ROOT / ".venv" / "bin" / "granian")
    server = subprocess.Popen(
        command("internal", env, granian=granian),
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                return server, port
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def load(port: int, token: str, api_key: str) -> list[int]:
    """CLIENT_THREADS threads of authorize+settle pairs, then one batch settle each; every
    answer's HTTP status (and 0 for an answer that is not what the call should have said)."""

    def client(thread: int) -> list[int]:
        statuses = []
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
            batch = []
            for n in range(PAIRS_PER_THREAD):
                request_id = f"pgb-{uuid4().hex[:8]}-{thread}-{n}"
                decision = http.post(
                    "/internal/v1/authorize",
                    json={"api_key": api_key, "request_id": request_id, "format": "openai"},
                )
                statuses.append(decision.status_code)
                if decision.status_code != 200 or not decision.json()["allowed"]:
                    statuses.append(0)
                    continue
                if n % 2:
                    batch.append({"request_id": request_id, "outcome": "success"})
                    continue
                settled = http.post(
                    "/internal/v1/settle", json={"request_id": request_id, "outcome": "success"}
                )
                statuses.append(settled.status_code)
            if batch:
                settled = http.post("/internal/v1/settle/batch", json={"settles": batch})
                statuses.append(settled.status_code)
                if settled.status_code == 200:
                    results = settled.json()["results"]
                    statuses.extend(200 if r.get("charged") == 1 else 0 for r in results)
        return statuses

    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        answers = list(pool.map(client, range(CLIENT_THREADS)))
    return [status for statuses in answers for status in statuses]


def run_through(
    bouncer: Bouncer, *, prepared: bool, tmp_path: Path
) -> tuple[list[int], list[list[str]]]:
    concurrency.connections_required(CLIENT_THREADS + 2)
    customer = funded_customer(20_000)  # tier 10,000+: 500 a minute
    _, token = service_token_create(name=f"pgbouncer-{uuid4().hex[:6]}")
    server, port = start_service(bouncer, prepared=prepared, log=tmp_path / "service.log")
    try:
        statuses = load(port, token, customer.raw_key)
        clients = bouncer.admin("SHOW CLIENTS")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=20)
    return statuses, clients


@pytest.mark.django_db(transaction=True)
def test_the_hot_path_answers_through_pgbouncer_in_transaction_mode_without_prepared_statements(
    pgbouncer: Bouncer, tmp_path: Path
) -> None:
    statuses, clients = run_through(pgbouncer, prepared=False, tmp_path=tmp_path)
    assert statuses and set(statuses) == {200}, (tmp_path / "service.log").read_text()
    # Several of the service's connections took turns on the one server connection.
    name = connection.settings_dict["NAME"]
    assert len([c for c in clients if c[2] == name]) >= 2, clients  # type, user, database, ...
    servers = pgbouncer.admin("SHOW SERVERS")
    assert len([s for s in servers if s[2] == name]) <= 1, servers
    charged = CLIENT_THREADS * PAIRS_PER_THREAD
    assert LedgerEntry.objects.filter(kind="charge").count() == charged
    assert UsageRecord.objects.filter(charged=1).count() == charged
    assert reconcile() == []
    # The session bounds reached the server connection through PgBouncer's connect_query.
    assert psql(pgbouncer.port, name, "SHOW lock_timeout").strip() == "5s"


@pytest.mark.django_db(transaction=True)
def test_with_prepared_statements_left_on_the_same_load_fails_through_pgbouncer(
    pgbouncer: Bouncer, tmp_path: Path
) -> None:
    """The control: what `DATABASE_PREPARED_STATEMENTS=0` prevents (one client's prepared
    statement missing on, or colliding with another's on, the shared server connection)."""
    statuses, _ = run_through(pgbouncer, prepared=True, tmp_path=tmp_path)
    assert set(statuses) - {200}, statuses
    assert "prepared statement" in (tmp_path / "service.log").read_text()
    assert reconcile() == []
