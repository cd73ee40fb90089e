"""The sweep task: in-process (eager, with the moved clock) and on a real Celery worker."""

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app
from credits import clock, services
from credits.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry, Lot
from credits.tasks import sweep_expired
from tests.credits.conftest import assert_ledger_consistent, funded_user

ROOT = Path(settings.BASE_DIR)


def test_the_beat_schedule_runs_the_sweep_every_minute() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["credits-sweep"]
    assert entry["task"] == sweep_expired.name == "credits.tasks.sweep_expired"
    assert entry["schedule"] == 60.0


@pytest.mark.django_db
def test_the_sweep_task_settles_every_due_account_in_batches() -> None:
    users = [funded_user((4, clock.now() + timedelta(minutes=1)), (1, None)) for _ in range(3)]
    services.hold_create(user_id=users[0].pk, request_id="r", ttl=timedelta(seconds=30))
    clock.advance(timedelta(minutes=2))

    assert sweep_expired.delay(limit=1).get() == 3

    for lot in Lot.objects.exclude(expires_at=None):
        expired = LedgerEntry.objects.filter(lot=lot, kind=EntryKind.EXPIRE)
        assert sum(e.amount for e in expired) == -4
    assert Hold.objects.get(request_id="r").status == HoldStatus.EXPIRED
    assert list(CreditAccount.objects.values_list("balance", flat=True)) == [1, 1, 1]
    assert sweep_expired.delay(limit=1).get() == 0
    assert_ledger_consistent()


def _database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{db['USER']}{password}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[str]:
    """A real Celery worker (a subprocess, production settings) consuming a queue of its own from
    the Redis broker, against the test database. Yields the queue's name."""
    assert settings.REDIS_URL, "this test needs REDIS_URL (the broker)"
    queue = f"ledger-test-{uuid4().hex}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "test-only",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.REDIS_URL,
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield queue
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        print((tmp_path / "worker.log").read_text()[-3000:])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_expires_lots_and_releases_holds(worker: str, tmp_path: Path) -> None:
    # The worker cannot see this process's moved clock, so the ledger is written an hour in the
    # past: by the wall clock the lots and the holds are already due, and nothing has swept yet.
    clock.advance(-timedelta(hours=1))
    user = funded_user((5, clock.now() + timedelta(minutes=10)), (3, None))
    idle = funded_user((7, clock.now() + timedelta(minutes=10)))
    held = services.hold_create(user_id=user.pk, request_id="held").hold
    assert held.lot.granted == 5
    services.hold_create(user_id=user.pk, request_id="held-too", ttl=timedelta(minutes=30))
    clock.reset()
    assert CreditAccount.objects.get(pk=user.pk).balance == 8  # nothing written yet

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False  # really send it through Redis
    try:
        sweep_expired.apply_async(queue=worker)
    finally:
        app.conf.task_always_eager = eager

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            not Hold.objects.filter(status=HoldStatus.LIVE).exists()
            and not Lot.objects.filter(expires_at__isnull=False, expired_at__isnull=True).exists()
        ):
            break
        time.sleep(0.2)
    assert set(Hold.objects.values_list("status", flat=True)) == {HoldStatus.EXPIRED}

    expiries = dict(
        LedgerEntry.objects.filter(kind=EntryKind.EXPIRE).values_list("idempotency_key", "amount")
    )
    lot_of_5 = Lot.objects.get(account_id=user.pk, granted=5)
    lot_of_7 = Lot.objects.get(account_id=idle.pk)
    assert expiries == {
        f"expire:lot:{lot_of_5.pk}": -3,  # its unheld credits, when the lot expired
        f"expire:hold:{held.pk}": -1,  # the held credit, when the holds expired later
        f"expire:hold:{Hold.objects.get(request_id='held-too').pk}": -1,
        f"expire:lot:{lot_of_7.pk}": -7,
    }
    accounts = CreditAccount.objects.in_bulk([user.pk, idle.pk])
    assert (accounts[user.pk].balance, accounts[user.pk].reserved) == (3, 0)
    assert (accounts[idle.pk].balance, accounts[idle.pk].reserved) == (0, 0)
    assert_ledger_consistent(user.pk)
    # The worker writes our log lines (settings.LOGGING), not Celery's own format: every line
    # has the fields the README promises.
    done = [
        line
        for line in (tmp_path / "worker.log").read_text().splitlines()
        if "credits.tasks.sweep_expired" in line and "succeeded" in line
    ]
    assert done, (tmp_path / "worker.log").read_text()[-2000:]
    assert all(" level=INFO logger=celery.app.trace request_id=" in line for line in done), done
