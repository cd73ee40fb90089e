"""Celery tasks of notifications: thin, idempotent, taking ids (services does the work)."""

import logging

from celery import shared_task

from config.broker import publish_soon
from config.observability import connect_task_signals

from . import services

connect_task_signals()
logger = logging.getLogger(__name__)


@shared_task(name="credits.notifications.event_dispatch")
def event_dispatch_task(event_id: str) -> int:
    """Fan out, then the first attempts: every endpoint but one gets its own task (a slow
    receiver delays no other), the remaining one is attempted here, which saves the common
    single-endpoint case a trip through the broker."""
    ids = services.event_dispatch(event_id=event_id)
    for delivery_id in ids[1:]:
        delivery_attempt_task.delay(delivery_id)
    if ids:
        services.delivery_attempt(delivery_id=ids[0])
    return len(ids)


@shared_task(name="credits.notifications.delivery_attempt")
def delivery_attempt_task(delivery_id: int) -> bool:
    return services.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="credits.notifications.sweep")
def notifications_sweep_task() -> int:
    """Every ~10 s: fan out the events whose after-commit kick was lost (broker down, or
    written by the gateway's SQL functions), queue the webhook retries that are due, and
    disable endpoints failing for 5 days."""
    dispatched = 0
    for event_id in services.events_undispatched():
        try:
            ids = services.event_dispatch(event_id=event_id)
        except Exception:
            # One event that cannot be fanned out (a bug, a bad row) must not hold back the
            # others behind it: it stays undispatched, logged, and is tried again next sweep.
            logger.exception("event %s: fan-out failed", event_id)
            continue
        for delivery_id in ids:
            publish_soon(delivery_attempt_task, delivery_id)
        dispatched += 1
    for delivery_id in services.deliveries_due():
        publish_soon(delivery_attempt_task, delivery_id)
    services.endpoints_disable_failing()
    return dispatched
