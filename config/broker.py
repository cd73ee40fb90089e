"""Publishing Celery tasks without making a request wait on the broker.

`task.delay()` talks to the broker in the caller's thread: with the broker (Redis) hung, kombu's
socket reads and its publish retries held the Stripe webhook's answer for 13 to 15 s. Requests
therefore hand their tasks to `publish_soon`, which queues them in memory for one publisher
thread per process and returns at once. What the thread cannot publish (broker away, the
process killed first, the queue full) is not lost for good: every caller stores its work in
the database first and a beat task picks up what is still pending (for Stripe events,
`stripe_events_requeue_stale`). Without a broker (the embedded default, tests) tasks run
eagerly in the caller, as before.
"""

import logging
import queue
import threading
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000

_queue: "queue.Queue[tuple[Any, tuple[Any, ...], dict[str, Any]]]" = queue.Queue(QUEUE_SIZE)
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def publish_soon(task: Any, *args: Any, **kwargs: Any) -> None:
    """`task.delay(*args, **kwargs)`, off the caller's thread when a broker is configured."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        task.delay(*args, **kwargs)
        return
    _ensure_thread()
    try:
        _queue.put_nowait((task, args, kwargs))
    except queue.Full:
        logger.error("task %s not queued: the publisher is %d behind", task.name, QUEUE_SIZE)


def _ensure_thread() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_publish_forever, name="task-publisher", daemon=True)
            _thread.start()


def _publish_forever() -> None:
    while True:
        task, args, kwargs = _queue.get()
        try:
            task.apply_async(args, kwargs, retry=False)
        except Exception:
            logger.exception("could not publish task %s; its work stays pending", task.name)
        finally:
            _queue.task_done()


def wait_published(timeout: float = 10.0) -> bool:
    """Block until everything queued so far was handed to the broker (tests, shutdown)."""
    done = threading.Event()

    def join() -> None:
        _queue.join()
        done.set()

    threading.Thread(target=join, daemon=True).start()
    return done.wait(timeout)
