"""`/healthz` shows whether Celery workers and beat are alive, from the heartbeats they write
(issue 15, item 6): a real worker and a real beat in subprocesses, on the Redis broker; killing
either shows in the answer within three heartbeat intervals."""

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from django.conf import settings
from django.test import Client, override_settings

from config import heartbeat
from config.redis import get_redis

ROOT = Path(__file__).resolve().parent.parent.parent
INTERVAL = 0.5


@pytest.fixture
def celery_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    assert settings.REDIS_URL, "this test needs REDIS_URL (the broker)"
    get_redis().delete(heartbeat.WORKERS_KEY, heartbeat.BEAT_KEY)
    yield {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "test-only",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.REDIS_URL,
        "HEARTBEAT_INTERVAL_SECONDS": str(INTERVAL),
    }
    get_redis().delete(heartbeat.WORKERS_KEY, heartbeat.BEAT_KEY, "celery")


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", *command],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=20)


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.django_db
@override_settings(CELERY_TASK_ALWAYS_EAGER=False, HEARTBEAT_INTERVAL_SECONDS=INTERVAL)
def test_healthz_reports_celery_workers_and_beat_from_their_heartbeats(
    celery_env: dict[str, str], tmp_path: Path
) -> None:
    def checks() -> dict[str, str]:
        response = Client().get("/healthz")
        assert response.status_code == 200  # Celery missing degrades, never a 503
        body: dict[str, str] = response.json()["checks"]
        return body

    assert checks()["celery_workers"] == "missing"
    assert checks()["celery_beat"] == "missing"

    queue = f"heartbeat-test-{uuid4().hex}"
    worker = _start(
        ["worker", "--pool=solo", "-Q", queue, "--without-gossip", "--without-mingle"],
        celery_env,
        tmp_path / "worker.log",
    )
    beat = _start(
        ["beat", "-s", str(tmp_path / "schedule"), "--pidfile="],
        celery_env,
        tmp_path / "beat.log",
    )
    try:
        assert _wait_for(
            lambda: (now := checks())["celery_workers"] == now["celery_beat"] == "ok", timeout=60
        ), (tmp_path / "worker.log").read_text()[-2000:] + (tmp_path / "beat.log").read_text()
        assert Client().get("/healthz").json()["status"] == "ok"

        os.kill(worker.pid, signal.SIGKILL)
        assert _wait_for(lambda: checks()["celery_workers"] == "missing", timeout=3 * INTERVAL + 5)
        assert checks()["celery_beat"] == "ok"
        assert Client().get("/healthz").json()["status"] == "degraded"

        os.kill(beat.pid, signal.SIGKILL)
        assert _wait_for(lambda: checks()["celery_beat"] == "missing", timeout=3 * INTERVAL + 5)
    finally:
        _stop(worker)
        _stop(beat)
