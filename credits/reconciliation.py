"""Recompute every cached figure of the ledger from the entries and holds, and list what differs.

The entries are the truth: an account's balance is the sum of its entries, a lot's remaining is
the sum of the entries that touch it (its grant included), each `balance_after` is the running
sum, `reserved` is the sum of the live holds, `consumed` the sum of the charges, a hold's
`charged` its charge entry. Used by `manage.py reconcile_ledger` and, after every step, by the
property tests.

It writes nothing and locks no row. Every figure is compared inside PostgreSQL (aggregates,
a window for the running sums), and only the rows that disagree come back to Python, so its
memory does not grow with the ledger. All the queries read one snapshot: one REPEATABLE READ,
READ ONLY transaction, so an operation that commits while it runs is either wholly seen or not
at all, and no false discrepancy can appear. It used to lock each account row while it read the
account's entries in Python: on an account with 4 million entries that held the lock for 64 s,
and every authorize on the account waited as long. A snapshot holds back VACUUM's horizon
while it is open; that is the price of running it against a live service, and it is only as
long as the queries.
"""

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import (
    CharField,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, Concat

from .models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry, Lot


@dataclass(frozen=True)
class Discrepancy:
    user_id: UUID
    what: str
    cached: int
    computed: int

    def __str__(self) -> str:
        return f"{self.user_id}: {self.what} is {self.cached}, the ledger says {self.computed}"


def reconcile(user_ids: list[UUID] | None = None) -> list[Discrepancy]:
    """Every disagreement, of all accounts or of `user_ids`, read from one snapshot."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            # Must be the transaction's first statement. Inside an outer transaction (a test's)
            # the caller's snapshot is the one read. SQLite's transactions are snapshots already.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # Reading a large ledger takes longer than the web's statement bound
                # (DB_STATEMENT_TIMEOUT_MS); it locks nothing, so it may.
                cursor.execute("SET LOCAL statement_timeout = 0")
        found = [
            *_accounts(user_ids),
            *_entries(user_ids),
            *_holds(user_ids),
            *_lots(user_ids),
        ]
    return sorted(found, key=lambda d: (str(d.user_id), d.what))


def _of(queryset: QuerySet[Any], field: str, user_ids: list[UUID] | None) -> QuerySet[Any]:
    return queryset if user_ids is None else queryset.filter(**{f"{field}__in": user_ids})


def _sum(queryset: QuerySet[Any], by: str) -> Coalesce:
    """The sum of `amount` over `queryset` (correlated to the outer row by `by`), 0 for none."""
    total = queryset.values(by).annotate(total=Sum("amount")).values("total")
    return Coalesce(Subquery(total), 0)


def _accounts(user_ids: list[UUID] | None) -> list[Discrepancy]:
    entries = LedgerEntry.objects.filter(account=OuterRef("pk"))
    live = Hold.objects.filter(account=OuterRef("pk"), status=HoldStatus.LIVE)
    accounts = _of(CreditAccount.objects.all(), "pk", user_ids).annotate(
        ledger_balance=_sum(entries, "account"),
        ledger_consumed=-_sum(entries.filter(kind=EntryKind.CHARGE), "account"),
        live_reserved=_sum(live, "account"),
    )
    found = []
    for row in accounts.filter(
        ~Q(balance=F("ledger_balance"))
        | ~Q(consumed=F("ledger_consumed"))
        | ~Q(reserved=F("live_reserved"))
    ).values(
        "pk",
        "balance",
        "ledger_balance",
        "consumed",
        "ledger_consumed",
        "reserved",
        "live_reserved",
    ):
        for what, cached, computed in (
            ("balance", "balance", "ledger_balance"),
            ("consumed", "consumed", "ledger_consumed"),
            ("reserved", "reserved", "live_reserved"),
        ):
            if row[cached] != row[computed]:
                found.append(Discrepancy(row["pk"], what, row[cached], row[computed]))
    return found


def _entries(user_ids: list[UUID] | None) -> list[Discrepancy]:
    running = Window(Sum("amount"), partition_by=[F("account_id")], order_by=F("id").asc())
    # The window runs over all of an account's entries; only the filter on its result (Django
    # wraps it in an outer query) drops the ones that agree.
    entries = _of(LedgerEntry.objects.all(), "account", user_ids).annotate(running=running)
    return [
        Discrepancy(account_id, f"balance_after of entry {entry_id}", cached, computed)
        for account_id, entry_id, cached, computed in entries.exclude(
            balance_after=F("running")
        ).values_list("account_id", "id", "balance_after", "running")
    ]


class _UuidText(Func):
    """A UUID as `str(uuid)` writes it (how the ledger keys name a hold): PostgreSQL's text
    form already is; SQLite stores 32 hex digits, so the hyphens are put back."""

    template = "CAST(%(expressions)s AS text)"
    output_field = CharField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        parts = [(1, 8), (9, 4), (13, 4), (17, 4), (21, 12)]
        joined = " || '-' || ".join(f"substr({sql}, {start}, {length})" for start, length in parts)
        return f"lower({joined})", params * len(parts)


def _holds(user_ids: list[UUID] | None) -> list[Discrepancy]:
    # A hold's `charged` is what its one charge entry says (keyed `charge:<hold id>`).
    charge = LedgerEntry.objects.filter(
        kind=EntryKind.CHARGE,
        idempotency_key=Concat(
            Value("charge:"), _UuidText(OuterRef("pk")), output_field=CharField()
        ),
    )
    holds = _of(Hold.objects.all(), "account", user_ids).annotate(
        entry_charged=-Coalesce(Subquery(charge.values("amount")[:1]), 0)
    )
    return [
        Discrepancy(account_id, f"charged of hold {request_id}", cached, computed)
        for account_id, request_id, cached, computed in holds.exclude(
            charged=F("entry_charged")
        ).values_list("account_id", "request_id", "charged", "entry_charged")
    ]


def _lots(user_ids: list[UUID] | None) -> list[Discrepancy]:
    entries = LedgerEntry.objects.filter(account=OuterRef("account"), lot=OuterRef("pk"))
    # By account first: holds have no index of their own on the lot.
    live = Hold.objects.filter(
        account=OuterRef("account"), lot=OuterRef("pk"), status=HoldStatus.LIVE
    )
    lots = _of(Lot.objects.all(), "account", user_ids).annotate(
        ledger_remaining=_sum(entries, "lot"), live_reserved=_sum(live, "lot")
    )
    found = []
    for row in lots.filter(
        ~Q(remaining=F("ledger_remaining"))
        | ~Q(reserved=F("live_reserved"))
        | (Q(expired_at__isnull=False) & ~Q(remaining=F("reserved")))
    ).values(
        "pk",
        "account_id",
        "remaining",
        "ledger_remaining",
        "reserved",
        "live_reserved",
        "expired_at",
    ):
        user_id, lot = row["account_id"], row["pk"]
        if row["remaining"] != row["ledger_remaining"]:
            found.append(
                Discrepancy(
                    user_id, f"remaining of lot {lot}", row["remaining"], row["ledger_remaining"]
                )
            )
        if row["reserved"] != row["live_reserved"]:
            found.append(
                Discrepancy(
                    user_id, f"reserved of lot {lot}", row["reserved"], row["live_reserved"]
                )
            )
        if row["expired_at"] is not None and row["remaining"] != row["reserved"]:
            # An expired lot keeps only what live holds took from it before it expired.
            found.append(
                Discrepancy(
                    user_id, f"remaining of expired lot {lot}", row["remaining"], row["reserved"]
                )
            )
    return found
