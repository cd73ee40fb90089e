"""Periodic work of the ledger (scheduled in settings.CELERY_BEAT_SCHEDULE).

Correctness never depends on these: every money operation writes what has come due on its own
account first. The sweep only keeps idle accounts' entries timely."""

import logging

from celery import shared_task
from django.conf import settings

from . import clock, notices, reconciliation, reconciliation_incremental, retention, services

logger = logging.getLogger(__name__)


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


@shared_task(name="credits.tasks.reconcile_incremental", ignore_result=True)
def reconcile_incremental() -> int:
    """The nightly reconciliation: the entries since each account's checkpoint. Every
    discrepancy is logged at ERROR (alerting watches for it); returns how many there were."""
    try:
        run = reconciliation_incremental.reconcile_incremental()
    except reconciliation_incremental.ReconcileBusy:
        logger.warning("incremental reconciliation skipped: another one is running")
        return 0
    return _report(run.found, run.summary())


@shared_task(name="credits.tasks.reconcile_full", ignore_result=True)
def reconcile_full() -> int:
    """The weekly reconciliation of the whole ledger (what a checkpoint cannot see)."""
    return _report(reconciliation.reconcile(), "full")


def _report(found: list[reconciliation.Discrepancy], summary: str) -> int:
    for discrepancy in found:
        logger.error("ledger discrepancy: %s", discrepancy)
    logger.info("reconciliation (%s): %d discrepancies", summary, len(found))
    return len(found)
