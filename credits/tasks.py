"""Periodic work of the ledger (scheduled in settings.CELERY_BEAT_SCHEDULE).

Correctness never depends on these: every money operation writes what has come due on its own
account first. The sweep only keeps idle accounts' entries timely."""

from celery import shared_task

from . import services


@shared_task(name="credits.tasks.sweep_expired", ignore_result=True)
def sweep_expired(limit: int = 500) -> int:
    """Expire lots and release holds that have come due, on every account."""
    total = 0
    while True:
        done = services.accounts_sweep(limit=limit)
        total += done
        if done < limit:
            return total
