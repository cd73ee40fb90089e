import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client, override_settings

from config.redis import get_redis

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_client_reset() -> Iterator[None]:
    """`get_redis` keeps one client per process: forget it around a test that points
    REDIS_URL elsewhere."""
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


def test_healthz_is_200_when_the_database_and_redis_answer(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


@pytest.mark.usefixtures("redis_client_reset")
def test_a_configured_redis_that_is_unreachable_is_503_on_healthz_and_degraded_on_readyz(
    client: Client,
) -> None:
    """The contract's /healthz counts Redis; readiness does not: the service works without
    Redis (the limiter fails open, throttles count in-process), so a load balancer probing
    /readyz does not pull every node for it (issue 15, item 6)."""
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):  # nothing listens on port 1
        healthz = client.get("/healthz")
        readyz = client.get("/readyz")
    checks = {"database": "ok", "redis": "unreachable"}
    assert healthz.status_code == 503
    assert healthz.json() == {"status": "unavailable", "checks": checks}
    assert readyz.status_code == 200
    assert readyz.json() == {"status": "degraded", "checks": checks}


def test_livez_checks_no_dependency(client: Client) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.usefixtures("redis_client_reset")
def test_healthz_does_not_check_redis_when_none_is_configured(client: Client) -> None:
    with override_settings(REDIS_URL=""):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok"}


def test_healthz_is_503_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    """A real unreachable database: the embedded default pointed at a folder that does not
    exist, in a fresh process (settings are read at start-up)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        SQLITE_PATH=str(tmp_path / "missing" / "db.sqlite3"),
        LOG_LEVEL="CRITICAL",
    )
    script = (
        "import django, json; django.setup(); from django.test import Client; "
        "r = Client().get('/healthz'); print(json.dumps([r.status_code, r.json()]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status, body = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == 503
    assert body == {"status": "unavailable", "checks": {"database": "unreachable"}}
