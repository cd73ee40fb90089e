"""Retention of settled holds (issue 23, "Data growth"): `HOLD_RETENTION_DAYS` (0, the default,
keeps them forever).

A hold is what makes an authorize replayable and a settle findable by its request id
(CONTRACT.md, "Retries"). Once it is settled (committed, released or expired) and older than
the retention, it is deleted; so, documented in the README:

- an authorize retried with the request id of a deleted hold is decided afresh (a new hold, a
  new charge if it is settled as a success), as if the id had never been seen;
- a settle of a deleted hold's request id is 404 `request_not_found`;
- `authorized_at` of the request's usage record (`/api/user/requests`) reads null.

A retention of days is far beyond any retry window (gateways retry within seconds; the hold
itself lives `HOLD_TTL_SECONDS`). Never deleted: a live hold, whatever its age (its credit is
still reserved; the sweep expires it first), and the ledger (a committed hold's charge entry
stays, and `reconcile()` reads holds only to compare each remaining one with its entry and the
live ones with the reservations, so it stays clean).

Why deletes and not partitions: see credits/gateway/partitions.py. The deletes are bounded
(`batch` rows a statement, one short transaction each) and walk the expired range in time
windows, so that each statement reads only the part of the table its window covers: on
PostgreSQL a BRIN index on `created_at` (migration credits 0019: a few pages for millions of
rows, and no index entry per insert, unlike a B-tree) leads every statement to its window's
pages; on SQLite (the embedded default, small tables) each statement scans the table.
"""

from datetime import datetime, timedelta

from django.db.models import Min, QuerySet

from .models import Hold, HoldStatus

BATCH = 5_000
WINDOW = timedelta(hours=1)


def holds_prune(*, now: datetime, days: int, batch: int = BATCH, window: timedelta = WINDOW) -> int:
    """Delete the settled holds created more than `days` days before `now`; how many. 0 days:
    nothing (keep forever)."""
    if days <= 0:
        return 0
    cutoff = now - timedelta(days=days)
    settled = Hold.objects.filter(created_at__lt=cutoff).exclude(status=HoldStatus.LIVE)
    start = settled.aggregate(oldest=Min("created_at"))["oldest"]
    deleted = 0
    while start is not None and start < cutoff:
        end = min(start + window, cutoff)
        deleted += _window_delete(settled.filter(created_at__gte=start, created_at__lt=end), batch)
        start = end
    return deleted


def _window_delete(holds: "QuerySet[Hold]", batch: int) -> int:
    deleted = 0
    while True:
        ids = list(holds.values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        # The status is checked again by the DELETE itself: a hold is never live again once
        # settled, so the only row this could spare is one that was never selected.
        count, _ = Hold.objects.filter(pk__in=ids).exclude(status=HoldStatus.LIVE).delete()
        deleted += count
        if len(ids) < batch:
            return deleted
