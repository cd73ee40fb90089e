"""Reconcile only what changed since the last run, from per-account checkpoints.

`reconcile()` (`credits.reconciliation`) recomputes every figure from the whole ledger: 110 to
160 s at 5 million entries. This run starts each account from its `ReconcileCheckpoint` (its
last verified entry, and the balance and consumed there; each lot's remaining there in a
`ReconcileLotCheckpoint`) and reads only the entries after it: for the accounts that agreed
at the last run, one range of the newest ids (they were verified through its horizon); for the
others (new, or `stuck` on a discrepancy), an index range each on `entry_account_newest`
(account, -id). In one snapshot it verifies, as the full run does:

- every entry read: its `balance_after` is the checkpoint's balance plus the running sum since;
- every account: balance and consumed (checkpoint + the entries since), reserved (live holds);
- every lot: remaining (its checkpoint + its entries since), reserved (live holds), and an
  expired lot keeps only what live holds took;
- the holds touched since: every live hold, and every hold named by a charge entry read, has
  the `charged` its charge entry says.

Then it advances the checkpoint of every account on which all of that agreed, to its last entry
read that is at most the *horizon*, in the same transaction (REPEATABLE READ: the same snapshot).
An account with any discrepancy keeps its checkpoint, so the next run reads it again from there
and reports it again until it is put right. It locks no account, lot or hold row; it writes
only the checkpoint tables (and a temporary table of the entries read). Its cost is the
entries since the checkpoints plus one pass over the accounts and lots (one row per customer
and per grant), whatever the ledger's size.

The horizon, because ids are not commit order: an identity id is taken at insert, so a
transaction holding id 100 can commit after one holding id 101 has, and a snapshot between the
two sees 101 but not 100. A checkpoint past 100 would never read it. Every money operation
locks its account row (which gives it a transaction id) before it inserts an entry, so before
its snapshot the run reads the sequence's last value L, then the next transaction id X0: every
transaction that took an id up to L has an id below X0. Its snapshot then must show none of
those still running (`pg_snapshot_xip`), except ones the activity view places in another
database (a snapshot spans the whole server; another database cannot write this ledger); it
waits up to `settle_seconds` for them to end (money operations take milliseconds). If one is
still open (a stuck session), the run verifies but advances nothing, and says so. (A writer
that inserted an entry without locking first, as its transaction's first write, would get its
transaction id microseconds after its entry id, and could slip between L and X0: none does.)
Checkpoints never pass L.
A sequence with CACHE > 1 hands out ids out of order by design: then nothing is advanced.

What a checkpoint cannot catch, and why the full run stays: an entry changed or deleted below a
checkpoint (the append-only triggers refuse it, but a superuser can disable them), a settled
hold whose `charged` was changed without an entry (its charge is older than the checkpoint, or
it has none), or a checkpoint row itself edited. Run the incremental nightly (beat:
`reconcile-incremental`) and the full one weekly, off-peak (`reconcile-full`).

On SQLite (the embedded default: small ledgers, one process) the full run is the incremental.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import OperationalError, connection, transaction

from . import clock
from .models import EntryKind, HoldStatus
from .reconciliation import Discrepancy, reconcile

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 5.0


class ReconcileBusy(Exception):
    """Another incremental reconciliation holds the checkpoints."""


@dataclass(frozen=True)
class IncrementalRun:
    found: list[Discrepancy]
    entries: int  # entries read, after the checkpoints
    advanced: int  # checkpoints moved forward
    horizon: int | None  # the highest id a checkpoint may reach; None: none moved
    advance: bool = True
    full: bool = False  # SQLite: the full run ran instead

    def summary(self) -> str:
        if self.full:
            return "the full reconciliation (SQLite keeps no checkpoints)"
        if not self.advance:
            moved = "checkpoints left as they were"
        elif self.horizon is None:
            moved = "checkpoints not advanced (a transaction older than the run is still open)"
        else:
            moved = f"{self.advanced} checkpoints advanced, up to entry {self.horizon}"
        return f"incremental: {self.entries} entries read since the checkpoints; {moved}"


def reconcile_incremental(
    *, advance: bool = True, settle_seconds: float = SETTLE_SECONDS
) -> IncrementalRun:
    """Every disagreement since the checkpoints, read from one snapshot; with `advance`, the
    checkpoints of the accounts that agree moved forward in the same transaction."""
    if connection.vendor != "postgresql":
        return IncrementalRun(reconcile(), 0, 0, None, advance=False, full=True)
    outermost = not connection.in_atomic_block
    mark = _mark() if advance else None
    if mark is not None and outermost:
        _wait_for_older_transactions(mark[1], settle_seconds)
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # Must be the transaction's first statement; inside an outer transaction (a test's)
            # the caller's snapshot is the one read, as in `reconcile()`.
            # Not READ ONLY, even without `advance`: that refuses CREATE TABLE AS, temporary too.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SET LOCAL statement_timeout = 0")
        if advance:
            _lock_checkpoints(cursor)
        # The first statement that reads takes the snapshot: the horizon is checked in it.
        horizon = _horizon(cursor, mark)
        entries = _read_entries(cursor)
        holds = _holds(cursor, one_by_one=_few(cursor, entries))
        found = [*_accounts(cursor), *_entries(cursor), *holds, *_lots(cursor)]
        advanced = 0
        if horizon is not None:
            advanced = _advance(cursor, horizon, sorted({d.user_id for d in found}))
        if not outermost:
            # The caller's transaction goes on (ON COMMIT DROP would leave it to the next run).
            cursor.execute("DROP TABLE reconcile_new")
    found.sort(key=lambda d: (str(d.user_id), d.what))
    return IncrementalRun(found, entries, advanced, horizon, advance)


# --- the horizon ---------------------------------------------------------------------------


def _mark() -> tuple[int, int] | None:
    """(L, X0): the entries' sequence's last value, then the next transaction id; None when
    the sequence caches values (ids out of order by design)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.seqcache, pg_sequence_last_value(s.seqrelid) FROM pg_sequence s"
            " WHERE s.seqrelid = pg_get_serial_sequence('credits_ledgerentry', 'id')::regclass"
        )
        cache, last = cursor.fetchone()
        # Read after L, in its own statement: every id up to L was taken before this.
        cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        (next_xid,) = cursor.fetchone()
    if cache != 1:
        logger.warning("the entries' sequence caches %s ids: no checkpoint advanced", cache)
        return None
    return (last or 0), next_xid


def _wait_for_older_transactions(next_xid: int, settle_seconds: float) -> None:
    deadline = time.monotonic() + settle_seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline and not _older_ones_ended(cursor, next_xid):
            time.sleep(0.05)


def _older_ones_ended(cursor: Any, next_xid: int) -> bool:
    """No transaction below `next_xid` is running in this snapshot, other than ones the
    activity view shows in another database (a snapshot's transactions are the whole server's:
    another database's cannot write our ledger). A transaction that ended since the snapshot
    is no longer in the view, so it counts as running: it may have committed after it."""
    cursor.execute(
        """
        SELECT NOT EXISTS (
            SELECT FROM pg_snapshot_xip(pg_current_snapshot()) AS x (xid)
             WHERE x.xid < %(next)s::text::xid8
               AND NOT EXISTS (
                   SELECT FROM pg_stat_activity s
                    WHERE s.backend_xid::text = (x.xid::text::numeric %% 4294967296)::text
                      AND s.datname IS DISTINCT FROM current_database()))
        """,
        {"next": next_xid},
    )
    return bool(cursor.fetchone()[0])


def _horizon(cursor: Any, mark: tuple[int, int] | None) -> int | None:
    if mark is None:
        cursor.execute("SELECT 1")  # takes the snapshot
        return None
    last, next_xid = mark
    if not _older_ones_ended(cursor, next_xid):
        logger.warning("a transaction older than the reconciliation is still open")
        return None
    return last


def _lock_checkpoints(cursor: Any) -> None:
    # One advancing run at a time; taken before the snapshot (LOCK does not take one), so a
    # run that waited its turn would read the checkpoints the other wrote. NOWAIT: the second
    # run fails at once rather than repeat the first's work.
    try:
        cursor.execute("LOCK TABLE credits_reconcilecheckpoint IN SHARE ROW EXCLUSIVE MODE NOWAIT")
    except OperationalError as exc:
        raise ReconcileBusy("another incremental reconciliation is running") from exc


# --- what is read --------------------------------------------------------------------------


# A charge's key is `charge:<hold id>`, written only by the ledger (the services and the
# gateway's SQL) from the hold's uuid; a key of another shape names no hold, as in the full run.
# LIKE, not a regular expression: 0.1 s against 1.9 s at 300,000 charges. (A key of this shape
# that is not hex would make the cast, and so the run, fail loudly; none can be written.)
_HOLD_OF_CHARGE = """
    CASE WHEN e.kind = %(charge)s
              AND e.idempotency_key LIKE 'charge:________-____-____-____-____________'
         THEN substr(e.idempotency_key, 8)::uuid END"""


def _read_entries(cursor: Any) -> int:
    """The entries after each account's checkpoint, into a temporary table. Accounts that agreed
    at the last run were verified through its horizon, at least the highest checkpoint of them
    all: their entries since are in one range of the newest ids (the primary key; a day's
    entries sit together at the end of the table). An account that disagreed, or has no
    checkpoint yet, is read on its own from its checkpoint (all of it without one), an index
    range on `entry_account_newest`: 100,000 such ranges took 2.5 to 3.5 s at 10 million
    entries (OFFSET 0 keeps the subquery apart: flattened, the planner scanned the whole
    ledger). A charge keeps the id of the hold its key names."""
    cursor.execute("SELECT max(entry_id) FROM credits_reconcilecheckpoint WHERE NOT stuck")
    tail = cursor.fetchone()[0]
    columns = f"e.id, e.account_id, e.lot_id, e.kind, e.amount, e.balance_after, {_HOLD_OF_CHARGE}"
    by_account = f"""
        SELECT {columns}
          FROM credits_creditaccount a
          LEFT JOIN credits_reconcilecheckpoint c ON c.account_id = a.user_id
         CROSS JOIN LATERAL (
               SELECT * FROM credits_ledgerentry e
                WHERE e.account_id = a.user_id AND e.id > COALESCE(c.entry_id, 0)
               OFFSET 0
         ) e
         WHERE c.account_id IS NULL OR c.stuck
        """  # noqa: S608 (constants only)
    newest = f"""
        SELECT {columns}
          FROM credits_ledgerentry e
          JOIN credits_reconcilecheckpoint c ON c.account_id = e.account_id
         WHERE e.id > %(tail)s AND e.id > c.entry_id AND NOT c.stuck
        """  # noqa: S608 (constants only)
    union = by_account if tail is None else f"{by_account} UNION ALL {newest}"
    cursor.execute(
        "CREATE TEMPORARY TABLE reconcile_new"
        " (id, account_id, lot_id, kind, amount, balance_after, hold_id)"
        f" ON COMMIT DROP AS {union}",
        {"charge": EntryKind.CHARGE, "tail": tail},
    )
    entries = int(cursor.rowcount)
    cursor.execute("ANALYZE reconcile_new")  # the plans below join it with the accounts and lots
    return entries


def _rows(cursor: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    cursor.execute(sql, {"charge": EntryKind.CHARGE, "live": HoldStatus.LIVE, **params})
    return list(cursor.fetchall())


def _accounts(cursor: Any) -> list[Discrepancy]:
    rows = _rows(
        cursor,
        """
        WITH moved AS (
            SELECT account_id, SUM(amount)::bigint AS amount,
                   COALESCE(SUM(amount) FILTER (WHERE kind = %(charge)s), 0)::bigint AS charged
              FROM reconcile_new GROUP BY account_id
        ), live AS (
            SELECT account_id, SUM(amount)::bigint AS amount
              FROM credits_hold WHERE status = %(live)s GROUP BY account_id
        )
        SELECT * FROM (
            SELECT a.user_id,
                   a.balance, COALESCE(c.balance, 0) + COALESCE(m.amount, 0),
                   a.consumed, COALESCE(c.consumed, 0) - COALESCE(m.charged, 0),
                   a.reserved, COALESCE(l.amount, 0)
              FROM credits_creditaccount a
              LEFT JOIN credits_reconcilecheckpoint c ON c.account_id = a.user_id
              LEFT JOIN moved m ON m.account_id = a.user_id
              LEFT JOIN live l ON l.account_id = a.user_id
        ) r (user_id, balance, ledger_balance, consumed, ledger_consumed, reserved, live)
         WHERE balance <> ledger_balance OR consumed <> ledger_consumed OR reserved <> live
        """,
    )
    found = []
    for user_id, *figures in rows:
        for what, cached, computed in zip(
            ("balance", "consumed", "reserved"), figures[0::2], figures[1::2], strict=True
        ):
            if cached != computed:
                found.append(Discrepancy(user_id, what, cached, computed))
    return found


def _entries(cursor: Any) -> list[Discrepancy]:
    rows = _rows(
        cursor,
        """
        SELECT account_id, id, balance_after, running FROM (
            SELECT n.account_id, n.id, n.balance_after,
                   COALESCE(c.balance, 0)
                   + (SUM(n.amount) OVER (PARTITION BY n.account_id ORDER BY n.id))::bigint
                   AS running
              FROM reconcile_new n
              LEFT JOIN credits_reconcilecheckpoint c ON c.account_id = n.account_id
        ) r
         WHERE balance_after <> running
        """,
    )
    return [
        Discrepancy(account_id, f"balance_after of entry {entry_id}", cached, computed)
        for account_id, entry_id, cached, computed in rows
    ]


def _few(cursor: Any, entries: int) -> bool:
    """Whether the entries read are few beside the holds (a nightly run), rather than most of
    the ledger (the first run, or after a long pause)."""
    cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'credits_hold'::regclass")
    holds = cursor.fetchone()[0]
    return holds < 0 or entries * 20 < holds


def _holds(cursor: Any, *, one_by_one: bool) -> list[Discrepancy]:
    """The holds named by a charge read (compared with that very entry: its key is unique), and
    the live holds (whose charge entry, if any, is looked up by its key). A few are read one by
    one through their primary key, sorted by it (neighbours share index pages: 0.72 of the
    unsorted time, two interleaved pairs at 100,000 charges among 10 million holds); many, by
    the planner's choice (a hash join): one by one, 303,000 charges took 9.8 s."""
    fence = "OFFSET 0" if one_by_one else ""
    rows = _rows(
        cursor,
        f"""
        SELECT h.account_id, h.request_id, h.charged, -n.amount
          FROM (SELECT hold_id, amount FROM reconcile_new WHERE hold_id IS NOT NULL
                 ORDER BY hold_id) n
         CROSS JOIN LATERAL (
               -- OFFSET 0: by its key, one at a time (else a hash join reads every hold).
               SELECT * FROM credits_hold h WHERE h.id = n.hold_id {fence}
         ) h
         WHERE h.charged <> -n.amount
         UNION
        SELECT h.account_id, h.request_id, h.charged, -COALESCE(e.amount, 0)
          FROM credits_hold h
          LEFT JOIN LATERAL (
               SELECT amount FROM credits_ledgerentry e
                WHERE e.kind = %(charge)s AND e.idempotency_key = 'charge:' || h.id::text
                LIMIT 1
          ) e ON true
         WHERE h.status = %(live)s AND h.charged <> -COALESCE(e.amount, 0)
        """,  # noqa: S608 (constants only)
    )
    return [
        Discrepancy(account_id, f"charged of hold {request_id}", cached, computed)
        for account_id, request_id, cached, computed in rows
    ]


def _lots(cursor: Any) -> list[Discrepancy]:
    rows = _rows(
        cursor,
        """
        WITH moved AS (
            SELECT account_id, lot_id, SUM(amount)::bigint AS amount
              FROM reconcile_new GROUP BY account_id, lot_id
        ), live AS (
            SELECT account_id, lot_id, SUM(amount)::bigint AS amount
              FROM credits_hold WHERE status = %(live)s GROUP BY account_id, lot_id
        )
        SELECT * FROM (
            SELECT l.id, l.account_id,
                   l.remaining, COALESCE(k.remaining, 0) + COALESCE(m.amount, 0),
                   l.reserved, COALESCE(h.amount, 0), l.expired_at IS NOT NULL
              FROM credits_lot l
              LEFT JOIN credits_reconcilelotcheckpoint k ON k.lot_id = l.id
              LEFT JOIN moved m ON m.lot_id = l.id AND m.account_id = l.account_id
              LEFT JOIN live h ON h.lot_id = l.id AND h.account_id = l.account_id
        ) r (id, account_id, remaining, ledger_remaining, reserved, live, expired)
         WHERE remaining <> ledger_remaining OR reserved <> live
            OR (expired AND remaining <> reserved)
        """,
    )
    found = []
    for lot, user_id, remaining, ledger_remaining, reserved, live, expired in rows:
        if remaining != ledger_remaining:
            found.append(
                Discrepancy(user_id, f"remaining of lot {lot}", remaining, ledger_remaining)
            )
        if reserved != live:
            found.append(Discrepancy(user_id, f"reserved of lot {lot}", reserved, live))
        if expired and remaining != reserved:
            # An expired lot keeps only what live holds took from it before it expired.
            found.append(
                Discrepancy(user_id, f"remaining of expired lot {lot}", remaining, reserved)
            )
    return found


# --- moving the checkpoints ----------------------------------------------------------------


def _advance(cursor: Any, horizon: int, disagreeing: list[UUID]) -> int:
    """Each agreeing account's checkpoint to its last entry read up to `horizon` (and its lots'
    remaining there); a checkpoint for each new account; the disagreeing ones marked `stuck`,
    where they were. Lots first: both read the account checkpoints as they were."""
    params = {
        "horizon": horizon,
        "bad": disagreeing,
        "now": clock.now(),
        "charge": EntryKind.CHARGE,
    }
    cursor.execute(
        """
        INSERT INTO credits_reconcilelotcheckpoint (lot_id, remaining)
        SELECT n.lot_id, COALESCE(MAX(k.remaining), 0) + SUM(n.amount)
          FROM reconcile_new n
          JOIN credits_lot l ON l.id = n.lot_id AND l.account_id = n.account_id
          LEFT JOIN credits_reconcilelotcheckpoint k ON k.lot_id = n.lot_id
         WHERE n.id <= %(horizon)s AND NOT n.account_id = ANY(%(bad)s::uuid[])
         GROUP BY n.lot_id
        ON CONFLICT (lot_id) DO UPDATE SET remaining = EXCLUDED.remaining
        """,
        params,
    )
    cursor.execute(
        """
        WITH moved AS (
            SELECT account_id, MAX(id) AS entry_id, SUM(amount) AS amount,
                   COALESCE(SUM(amount) FILTER (WHERE kind = %(charge)s), 0) AS charged
              FROM reconcile_new WHERE id <= %(horizon)s GROUP BY account_id
        )
        INSERT INTO credits_reconcilecheckpoint (account_id, entry_id, balance, consumed,
                                                 verified_at, stuck)
        SELECT a.user_id, COALESCE(m.entry_id, c.entry_id, 0),
               COALESCE(c.balance, 0) + COALESCE(m.amount, 0),
               COALESCE(c.consumed, 0) - COALESCE(m.charged, 0), %(now)s, false
          FROM credits_creditaccount a
          LEFT JOIN credits_reconcilecheckpoint c ON c.account_id = a.user_id
          LEFT JOIN moved m ON m.account_id = a.user_id
         WHERE NOT a.user_id = ANY(%(bad)s::uuid[])
           AND (m.account_id IS NOT NULL OR c.account_id IS NULL OR c.stuck)
        ON CONFLICT (account_id) DO UPDATE
           SET entry_id = EXCLUDED.entry_id, balance = EXCLUDED.balance,
               consumed = EXCLUDED.consumed, verified_at = EXCLUDED.verified_at, stuck = false
        """,
        params,
    )
    advanced = int(cursor.rowcount)
    # Where they were (nothing verified yet, for an account without a checkpoint).
    cursor.execute(
        """
        INSERT INTO credits_reconcilecheckpoint (account_id, entry_id, balance, consumed,
                                                 verified_at, stuck)
        SELECT account_id, 0, 0, 0, %(now)s, true FROM unnest(%(bad)s::uuid[]) AS b (account_id)
        ON CONFLICT (account_id) DO UPDATE SET stuck = true
        """,
        params,
    )
    return advanced
