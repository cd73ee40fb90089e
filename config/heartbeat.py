"""Heartbeats of the Celery worker and beat processes, for `/healthz`.

A dead beat or worker was invisible: nothing failed, work just stopped (a killed worker's Stripe
event waited 335 s for redelivery; with beat dead nothing expires on idle accounts). Each worker
and the beat start a daemon thread when they are ready (Celery's `worker_ready` and `beat_init`
signals, connected in config/celery.py) that writes the time to Redis every
`HEARTBEAT_INTERVAL_SECONDS`; `/healthz` counts the workers and checks the beat seen within
three intervals. Redis, not PostgreSQL: it is the broker too, so when it is away the workers
are idle anyway and the answer is "unknown", and a heartbeat costs the database nothing.
"""

import logging
import socket
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

WORKERS_KEY = "billing:heartbeat:workers"  # sorted set: worker name -> unix time last seen
BEAT_KEY = "billing:heartbeat:beat"


def _stale_after() -> float:
    return 3 * settings.HEARTBEAT_INTERVAL_SECONDS


def beat_alive() -> None:
    from config.redis import get_redis

    get_redis().set(BEAT_KEY, time.time(), ex=max(1, int(_stale_after())))


def worker_alive(name: str) -> None:
    from config.redis import get_redis

    get_redis().zadd(WORKERS_KEY, {name: time.time()})


def celery_status() -> dict[str, str]:
    """`{"celery_workers": ..., "celery_beat": ...}`: "ok", "missing" or "unknown" (Redis
    unreachable). Empty when tasks run in-process (no broker)."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {}
    if not settings.REDIS_URL:
        return {"celery_workers": "unknown", "celery_beat": "unknown"}
    from config.redis import get_redis

    client = get_redis()
    try:
        oldest = time.time() - _stale_after()
        client.zremrangebyscore(WORKERS_KEY, "-inf", oldest)
        workers = client.zcard(WORKERS_KEY)
        beat = client.get(BEAT_KEY)
    except Exception:
        logger.warning("health check: heartbeats unreadable (Redis unreachable)")
        return {"celery_workers": "unknown", "celery_beat": "unknown"}
    return {
        "celery_workers": "ok" if workers else "missing",
        "celery_beat": "ok" if beat is not None else "missing",
    }


def start(*, write: Any, name: str) -> threading.Thread:
    """A daemon thread calling `write()` every interval, logging (not dying on) failures."""

    def loop() -> None:
        while True:
            try:
                write()
            except Exception:
                logger.warning("heartbeat %s not written (Redis unreachable)", name)
            time.sleep(settings.HEARTBEAT_INTERVAL_SECONDS)

    thread = threading.Thread(target=loop, name=f"heartbeat-{name}", daemon=True)
    thread.start()
    return thread


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    start(write=lambda: worker_alive(hostname), name="worker")


def on_beat_init(sender: Any = None, **kwargs: Any) -> None:
    start(write=beat_alive, name="beat")
