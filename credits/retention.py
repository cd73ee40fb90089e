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

**How, without an index of its own.** Why deletes and not partitions: see
credits/gateway/partitions.py. A hold's id is a version 7 UUID made from its `created_at`
(config/ids.py), so the holds created before an instant are a prefix of the primary key. The
deletes walk that prefix in key order, `batch` keys a statement (one short transaction each),
each statement starting after the last key the previous one read: every key is read once, the
work is in proportion to what is deleted, and no index entry is added to the pair (a B-tree on
`created_at` would add two per pair, its insert and its settle's non-HOT update; a BRIN's
summaries widen for good once deleted space is reused). The age test itself is `created_at`, so
an id is only the order of the walk, never the reason to delete.

Holds made before version 7 ids (random version 4 UUIDs) sort anywhere: they are found by a
second walk, of the keys above the time-ordered range (all but about 1 in 160 of them; the
first walk reads those that sort below it); the second walk reads every such hold each run
until the last of them is past the retention, and nothing afterwards.

On SQLite (the embedded default) the same walk runs over its primary key index.
"""

from datetime import datetime, timedelta
from uuid import UUID

from config.ids import uuid7_floor

from .models import Hold, HoldStatus

BATCH = 5_000
_LOWEST = UUID(int=0)


def holds_prune(*, now: datetime, days: int, batch: int = BATCH) -> int:
    """Delete the settled holds created more than `days` days before `now`; how many. 0 days:
    nothing (keep forever)."""
    if days <= 0:
        return 0
    cutoff = now - timedelta(days=days)
    # Time-ordered ids below the cutoff's (and random ones that sort there); then random ones
    # above every id made so far (a day's margin for clocks ahead).
    deleted = _walk(cutoff, start=_LOWEST, stop=uuid7_floor(cutoff), batch=batch)
    deleted += _walk(cutoff, start=uuid7_floor(now + timedelta(days=1)), stop=None, batch=batch)
    return deleted


def _walk(cutoff: datetime, *, start: UUID, stop: UUID | None, batch: int) -> int:
    deleted = 0
    after = start
    while True:
        keys = Hold.objects.filter(pk__gt=after).order_by("pk")
        if stop is not None:
            keys = keys.filter(pk__lt=stop)
        rows = list(keys.values_list("pk", "created_at", "status")[:batch])
        if not rows:
            return deleted
        after = rows[-1][0]
        old = [
            pk
            for pk, created_at, status in rows
            if created_at < cutoff and status != HoldStatus.LIVE
        ]
        if old:
            # The status is checked again by the DELETE itself: a hold is never live again
            # once settled, so this only guards against a row that changed since the read.
            count, _ = Hold.objects.filter(pk__in=old).exclude(status=HoldStatus.LIVE).delete()
            deleted += count
        if len(rows) < batch:
            return deleted
