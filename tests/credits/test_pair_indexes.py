"""The indexes an authorize+settle pair writes to are a deliberate list (issue 23, "fewer writes
per pair"): each costs an entry per pair, so one more must be a choice, made here, with the query
that reads it named in its model."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

PAIR_TABLE_INDEXES = {
    "credits_hold": {
        "credits_hold_pkey",
        "hold_unique_request_id",
        "hold_live_account",
        "hold_live_expiry",
    },
    "credits_ledgerentry": {
        "credits_ledgerentry_pkey",
        "credits_ledgerentry_lot_id_e8f6f51f",
        "entry_account_newest",
        "entry_created_by",
        "entry_account_kind_newest",
        "entry_kind_created",
        "entry_kind_newest",
        "entry_reference_not_charge",
        "entry_unique_idempotency_key",
    },
    # Partitioned (credits/gateway/partitions.py): the parent's one index; each partition's
    # are checked below.
    "credits_usagerecord": {"usage_account_settled_id"},
}

# Each usage partition: its primary key and its part of the parent's (account, settled_at, id):
# the two entries a settle writes (the request id's unique index went in gateway 0014).
PARTITION_INDEX_COLUMNS = sorted([("id", True), ("account_id, settled_at, id", False)])


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("index definitions are read from PostgreSQL's catalogue")


def test_the_tables_a_pair_inserts_into_carry_only_the_indexes_something_reads() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexname FROM pg_indexes WHERE tablename = ANY(%s)",
            [list(PAIR_TABLE_INDEXES)],
        )
        found: dict[str, set[str]] = {}
        for table, index in cursor.fetchall():
            found.setdefault(table, set()).add(index)
    assert found == PAIR_TABLE_INDEXES


def test_every_usage_partition_carries_the_two_indexes_of_a_settle_and_no_more() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_indexdef(x.indexrelid), x.indisunique
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              JOIN pg_index x ON x.indrelid = c.oid
             WHERE i.inhparent = 'credits_usagerecord'::regclass
            """
        )
        found: dict[str, list[tuple[str, bool]]] = {}
        for partition, definition, unique in cursor.fetchall():
            columns = definition.rsplit(" (", 1)[1].rstrip(")")
            found.setdefault(partition, []).append((columns, unique))
    assert "credits_usagerecord_default" in found
    assert len(found) >= 3  # the legacy table, the months ahead, the DEFAULT
    for partition, indexes in found.items():
        assert sorted(indexes) == PARTITION_INDEX_COLUMNS, partition


def test_the_index_of_staff_written_entries_leaves_the_charges_out() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef('entry_created_by'::regclass)",
        )
        (definition,) = cursor.fetchone()
    assert definition.endswith("(created_by_id) WHERE (created_by_id IS NOT NULL)")


@pytest.mark.parametrize(
    ("index", "columns"),
    [
        ("entry_reference_not_charge", "(reference)"),
        ("entry_kind_newest", "(kind, id DESC)"),
        ("entry_account_kind_newest", "(account_id, kind, id DESC)"),
    ],
)
def test_the_indexes_of_the_admins_lists_leave_the_charges_out(index: str, columns: str) -> None:
    """The admin's exact search and the lists of one kind (issue 23) cost the pair nothing:
    a charge is found through its hold's request id, and the newest charges are the newest
    entries."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef(%s::regclass)", [index])
        (definition,) = cursor.fetchone()
    assert definition.endswith(f"{columns} WHERE (NOT ((kind)::text = 'charge'::text))")
