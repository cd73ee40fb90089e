"""Retention of usage records (`USAGE_RETENTION_DAYS`, 0 by default: keep forever) and the
upkeep of their monthly partitions; the design is in credits/gateway/partitions.py.

- PostgreSQL, partitioned: the partitions of the coming months are created; a partition wholly
  before the cutoff (its upper bound at or before `now - days`) is dropped, so rows are kept up
  to a month longer than the retention; rows of the DEFAULT partition before the cutoff (only
  there if the upkeep did not run for months) are deleted in batches.
- SQLite (and PostgreSQL before the conversion): rows before the cutoff are deleted in batches,
  oldest id first (ids follow the settles' order, so each batch finds its rows at the start of
  the primary key).

The buckets are never touched: they were written by the insert trigger in the settle's own
transaction, so whole hours and days (the default windows of `/api/user/credits`) read the same
after pruning. A window whose bound cuts an hour sums that partial hour from the records
(credits.usage.selectors.usage_of_cut_hours): past the retention they are gone, and the partial
hour reads as empty.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction

from . import partitions
from .models import UsageRecord

BATCH = 5_000


@dataclass
class Upkeep:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted: int = 0


def usage_upkeep(*, now: datetime, days: int, batch: int = BATCH) -> Upkeep:
    """Create the coming months' partitions, then apply the retention (`days` <= 0: none)."""
    done = Upkeep()
    partitioned = False
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            partitioned = partitions.is_partitioned(cursor)
            if partitioned:
                done.created = partitions.partitions_ensure(cursor, now)
    if days <= 0:
        return done
    cutoff = now - timedelta(days=days)
    if not partitioned:
        done.deleted = usage_delete_before(cutoff, batch=batch)
        return done
    with connection.cursor() as cursor:
        past = partitions.partitions_past(cursor, cutoff)
    for name in past:
        with transaction.atomic(), connection.cursor() as cursor:
            partitions.partition_drop(cursor, name)
        done.dropped.append(name)
    done.deleted = _default_delete_before(cutoff, batch=batch)
    return done


def usage_delete_before(cutoff: datetime, *, batch: int = BATCH) -> int:
    """Delete the records settled before `cutoff`, `batch` a statement (each its own short
    transaction); how many."""
    deleted = 0
    old = UsageRecord.objects.filter(settled_at__lt=cutoff).order_by("id")
    while True:
        ids = list(old.values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        count, _ = UsageRecord.objects.filter(id__in=ids).delete()
        deleted += count
        if len(ids) < batch:
            return deleted


def _default_delete_before(cutoff: datetime, *, batch: int) -> int:
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {partitions.DEFAULT} WHERE ctid = ANY(ARRAY("  # noqa: S608
                f"SELECT ctid FROM {partitions.DEFAULT} WHERE settled_at < %s LIMIT %s))",
                [cutoff, batch],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch:
            return deleted
