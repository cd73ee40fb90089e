"""Periodic work of the ledger (scheduled in settings.CELERY_BEAT_SCHEDULE).

Correctness never depends on these: every money operation writes what has come due on its own
account first. The sweep only keeps idle accounts' entries timely."""

from celery import shared_task
from django.conf import settings

from . import clock, notices, retention, services


@shared_task(name="credits.tasks.sweep_expired", ignore_result=True)
def sweep_expired(limit: int = 500) -> int:
    """Expire lots and release holds that have come due, on every account."""
    total = 0
    while True:
        done = services.accounts_sweep(limit=limit)
        total += done
        if done < limit:
            return total


@shared_task(name="credits.tasks.notices_sweep", ignore_result=True)
def notices_sweep(limit: int = 100) -> int:
    """`credits.expiring` for lots whose notice is due and `key.expiring` for keys expiring
    within 7 days (credits.notices). Two beats racing write each notice once."""
    return notices.notices_sweep(limit=limit)


@shared_task(name="credits.tasks.holds_prune", ignore_result=True)
def holds_prune() -> int:
    """Delete settled holds past `HOLD_RETENTION_DAYS` (credits.retention); never a live one."""
    return retention.holds_prune(now=clock.now(), days=settings.HOLD_RETENTION_DAYS)
