"""Periodic upkeep of the gateway's tables (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.conf import settings

from credits import clock

from .retention import usage_upkeep


@shared_task(name="credits.gateway.usage_upkeep", ignore_result=True)
def usage_upkeep_task() -> int:
    """The coming months' usage partitions, and `USAGE_RETENTION_DAYS` applied. Idempotent:
    two beats racing create nothing twice (the second's CREATE fails and is retried next run)."""
    done = usage_upkeep(now=clock.now(), days=settings.USAGE_RETENTION_DAYS)
    return len(done.created) + len(done.dropped) + done.deleted
