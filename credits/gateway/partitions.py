"""Monthly partitions of the usage records on PostgreSQL, and their retention (issue 23, "Data
growth").

**What is partitioned, and why only this table.** `credits_usagerecord` is partitioned by RANGE
of `settled_at`, one partition per UTC calendar month (`credits_usagerecord_y2027m01`), plus
the table as it was before (`credits_usagerecord_legacy`, every row before its bound) and a
DEFAULT partition. The other two per-request tables are not, for reasons measured against the
promises they carry:

- **ledger entries** are kept forever, so partitions would drop nothing; and
  `entry_unique_idempotency_key` must stay unique across all time (a Stripe event replayed a
  year later must not grant twice), which PostgreSQL can only enforce on a partitioned table
  with the partition key in the index, i.e. not across months. Keeping it would take a second,
  unpartitioned key table (the same index under another name, plus an insert on every charge:
  a statement more per pair).
- **holds** carry the authorize's idempotency (`ON CONFLICT (request_id)`) and the settle's
  look-up by request id. Partitioned by month, the unique index would only hold within a month,
  and the fix (a month column, a probe of the previous month's partition, an advisory lock on
  the request id near a month boundary to close the race of two retries in flight across it)
  touches every SQL function of the hot path, which another change of this issue rewrites at
  the same time. Holds are pruned by batched deletes instead (`credits.retention`).

**Why the usage records can be.** Their one unique promise, one record per settled request, is
kept by the hold, not by an index: the settle writes the record in the statement that moves
its hold out of `live`, under the hold's row lock, and a replayed settle finds the hold settled
and writes nothing. (The record's own unique index on `request_id` is gone since `gateway`
0014, 76 bytes a request: the hold's is the way in from a request id. It could not have been
declared on the parent anyway: a PostgreSQL unique index on a partitioned table must contain
the partition key.) The primary key is per partition (`id` comes from one sequence, so ids
never repeat across partitions); the `(account, settled_at, id)` index, the foreign keys, the
CHECK and the bucket trigger are declared on the parent and cloned onto each partition.

The hot path does not change: the settle inserts into `credits_usagerecord` as before and
PostgreSQL routes the row (same statements, same index entries per pair: bench/writes.py).

**Partitions exist before they are needed.** `partitions_ensure` creates the current month and
the next `AHEAD` ones (a beat task, daily); a row whose month has no partition yet lands in the
DEFAULT partition, so an insert never fails. Creating a month whose rows already sit in the
DEFAULT partition moves them first (the DEFAULT is otherwise empty, and PostgreSQL refuses to
create a partition whose rows the DEFAULT holds).

**Retention** (`USAGE_RETENTION_DAYS`, default 0 = keep forever): a partition whose upper bound is
at least that many days in the past is dropped whole (`DROP TABLE`, no row-by-row delete, no
vacuum). Its buckets were written by the insert trigger in each settle's own transaction, so
every report that reads the buckets (`/api/user/credits`) is unchanged; the per-request list
(`/api/user/requests`) ends at the retention. The DEFAULT and the current month are never
dropped. Dropping a partition takes an ACCESS EXCLUSIVE lock on the parent for an instant; it is
taken with a short `lock_timeout`, so that a settle is never queued behind it for longer: a drop
that cannot get the lock is left to the next run.

On SQLite (the embedded default, no partitions) retention deletes the old records in bounded
batches (`credits.gateway.retention`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

TABLE = "credits_usagerecord"
LEGACY = f"{TABLE}_legacy"
DEFAULT = f"{TABLE}_default"
SEQUENCE = f"{TABLE}_id_seq"
AHEAD = 3  # months created ahead of the current one
# The ACCESS EXCLUSIVE lock of a drop or of a partition's creation waits at most this long, so
# that no settle queues behind it for longer (the statement fails and the next run tries again).
LOCK_TIMEOUT = "200ms"


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def month_add(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{TABLE}_y{month.year:04d}m{month.month:02d}"


def _at(month: date) -> str:
    """A month's first instant as a UTC timestamptz literal."""
    return datetime(month.year, month.month, 1, tzinfo=UTC).isoformat()


@dataclass(frozen=True)
class Partition:
    name: str
    upper: datetime | None  # None: the DEFAULT partition (or no upper bound)


def is_partitioned(cursor: Any) -> bool:
    cursor.execute("SELECT c.relkind = 'p' FROM pg_class c WHERE c.oid = to_regclass(%s)", [TABLE])
    row = cursor.fetchone()
    return bool(row and row[0])


def partitions(cursor: Any) -> list[Partition]:
    """The partitions of the table, each with its upper bound (None for the DEFAULT)."""
    cursor.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = %s::regclass ORDER BY c.relname
        """,
        [TABLE],
    )
    found = []
    for name, bound in cursor.fetchall():
        found.append(Partition(name, _upper(bound)))
    return found


def _upper(bound: str) -> datetime | None:
    # "FOR VALUES FROM ('2027-01-01 00:00:00+00') TO ('2027-02-01 00:00:00+00')" or "DEFAULT"
    if " TO (" not in bound:
        return None
    text = bound.split(" TO (", 1)[1].rstrip(")").strip("'")
    if text == "MAXVALUE":
        return None
    return datetime.fromisoformat(text)


# --- The conversion of the existing table (migration gateway 0015) ------------------------------


def legacy_bound(now: datetime) -> date:
    """The upper bound of the legacy partition: the month after the one of `now + 1 day`. Rows
    keep landing in the legacy table until the switch and afterwards until that bound, so a
    conversion run in the last hours of a month cannot refuse a settle stamped just after it."""
    return month_add(month_start(now + timedelta(days=1)), 1)


def convert_prepare(cursor: Any, bound: date) -> None:
    """Before the switch, no lock that blocks writes: a CHECK that proves every row of the
    table is below `bound`, added NOT VALID (instant) and validated apart (a scan under SHARE
    UPDATE EXCLUSIVE: inserts go on). ATTACH PARTITION then trusts it and scans nothing."""
    cursor.execute(
        f"ALTER TABLE {TABLE} ADD CONSTRAINT usage_legacy_range"
        f" CHECK (settled_at < '{_at(bound)}') NOT VALID"
    )
    cursor.execute(f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT usage_legacy_range")


def _foreign_keys(cursor: Any, table: str) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
        [table],
    )
    return list(cursor.fetchall())


def convert_switch(cursor: Any, bound: date, now: datetime) -> None:
    """The switch, in the caller's one transaction, all catalogue changes: the ACCESS EXCLUSIVE
    lock on the table is held for milliseconds whatever its size (measured in the README).
    The table becomes the legacy partition [MINVALUE, bound), under a new partitioned parent
    of the same name that takes over its sequence, indexes, constraints and trigger."""
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    fks = _foreign_keys(cursor, TABLE)
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {LEGACY}")
    cursor.execute(f"ALTER TABLE {LEGACY} RENAME CONSTRAINT {TABLE}_pkey TO {LEGACY}_pkey")
    cursor.execute(f"ALTER INDEX usage_account_settled_id RENAME TO {LEGACY}_account_settled")
    cursor.execute(f"DROP TRIGGER credits_usagerecord_bucket ON {LEGACY}")
    # The ids go on from the legacy identity's sequence: a new sequence owned by the parent,
    # started after the last id handed out (no insert runs while the lock is held), and the
    # legacy column's identity dropped (it would drop its sequence with the partition).
    cursor.execute(f"SELECT pg_get_serial_sequence('{LEGACY}', 'id')")
    (old_sequence,) = cursor.fetchone()
    cursor.execute(f"SELECT last_value, is_called FROM {old_sequence}")  # noqa: S608 (catalogue)
    last_value, is_called = cursor.fetchone()
    cursor.execute(f"ALTER TABLE {LEGACY} ALTER COLUMN id DROP IDENTITY")
    cursor.execute(
        f"CREATE TABLE {TABLE} (LIKE {LEGACY} INCLUDING DEFAULTS INCLUDING STORAGE,"
        " CONSTRAINT usage_counts_not_negative CHECK (prompt_tokens >= 0"
        " AND completion_tokens >= 0 AND charged >= 0 AND http_status >= 0))"
        " PARTITION BY RANGE (settled_at)"
    )
    cursor.execute(f"CREATE SEQUENCE {SEQUENCE} OWNED BY {TABLE}.id")
    cursor.execute(f"SELECT setval('{SEQUENCE}', %s, %s)", [last_value, bool(is_called)])
    cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{SEQUENCE}')")
    cursor.execute(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {LEGACY}"
        f" FOR VALUES FROM (MINVALUE) TO ('{_at(bound)}')"
    )
    cursor.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT usage_legacy_range")
    # The parent's index, the legacy one attached to it (no build).
    cursor.execute(
        f"CREATE INDEX usage_account_settled_id ON ONLY {TABLE} (account_id, settled_at, id)"
    )
    cursor.execute(
        f"ALTER INDEX usage_account_settled_id ATTACH PARTITION {LEGACY}_account_settled"
    )
    # The same foreign keys on the parent: PostgreSQL adopts the legacy partition's identical
    # ones instead of checking its rows again.
    for name, definition in fks:
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
    cursor.execute(
        f"CREATE TRIGGER credits_usagerecord_bucket AFTER INSERT ON {TABLE}"
        " FOR EACH ROW EXECUTE FUNCTION credits_usage_bucket_add()"
    )
    month = bound
    while month <= month_add(month_start(now), AHEAD):
        _create(cursor, month)
        month = month_add(month, 1)
    cursor.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {TABLE} DEFAULT")
    _primary_key(cursor, DEFAULT)


def _primary_key(cursor: Any, name: str) -> None:
    """What cannot be declared on the parent (see the module docstring): the partition's own
    primary key."""
    cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_pkey PRIMARY KEY (id)")


def _create(cursor: Any, month: date, *, move_default_rows: bool = False) -> None:
    """The month's partition, built as a table of its own and then attached: ATTACH PARTITION
    locks the parent in SHARE UPDATE EXCLUSIVE mode, which lets settles insert, where CREATE
    TABLE ... PARTITION OF would lock it ACCESS EXCLUSIVE. Attaching scans the new table (empty,
    or the moved rows) and the DEFAULT (empty unless the beat was down).

    With `move_default_rows` (the DEFAULT holds rows of the month: the beat was down), those
    rows leave the DEFAULT in the same transaction; they are copied into the table before it is
    a partition, so the bucket trigger does not count them twice."""
    name = partition_name(month)
    lower, upper = _at(month), _at(month_add(month, 1))
    cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    if move_default_rows:
        # Identifiers and bounds are ours (names and dates made here), never input.
        where = f"settled_at >= '{lower}' AND settled_at < '{upper}'"
        cursor.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        cursor.execute(f"INSERT INTO {name} SELECT * FROM {DEFAULT} WHERE {where}")  # noqa: S608
        cursor.execute(f"DELETE FROM {DEFAULT} WHERE {where}")  # noqa: S608
    _primary_key(cursor, name)
    cursor.execute(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{lower}') TO ('{upper}')"
    )


def _ddl_ready(cursor: Any) -> None:
    """A short lock wait, and the foreign keys' deferred checks run now: PostgreSQL refuses to
    alter a table with checks pending in the transaction (none are in the beat's own
    transactions; a caller that inserted first, as a test does, has some)."""
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def partitions_ensure(cursor: Any, now: datetime, ahead: int = AHEAD) -> list[str]:
    """Create the partitions of the current month and the `ahead` next ones that do not exist
    yet; the names created. One transaction per partition is the caller's (atomic per call)."""
    found = partitions(cursor)
    existing = {partition.name for partition in found}
    legacy_upper = next((p.upper for p in found if p.name == LEGACY), None)
    created = []
    for offset in range(ahead + 1):
        month = month_add(month_start(now), offset)
        name = partition_name(month)
        if name in existing:
            continue
        if legacy_upper is not None and _aware(month) < legacy_upper:
            continue  # the legacy partition covers it
        _ddl_ready(cursor)
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {DEFAULT}"  # noqa: S608 (a constant name)
            " WHERE settled_at >= %s AND settled_at < %s)",
            [_aware(month), _aware(month_add(month, 1))],
        )
        (in_default,) = cursor.fetchone()
        _create(cursor, month, move_default_rows=bool(in_default))
        created.append(name)
    return created


def _aware(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def partitions_past(cursor: Any, cutoff: datetime) -> list[str]:
    """The partitions wholly before `cutoff` (upper bound at or before it): never the DEFAULT,
    which has no upper bound."""
    return [p.name for p in partitions(cursor) if p.upper is not None and p.upper <= cutoff]


def partition_drop(cursor: Any, name: str) -> None:
    """Drop one partition (caller's transaction), waiting at most LOCK_TIMEOUT for the lock."""
    _ddl_ready(cursor)
    cursor.execute(f"DROP TABLE {name}")
