"""Recompute every cached figure of the ledger from the entries and holds, and list what differs.

The entries are the truth: an account's balance is the sum of its entries, a lot's remaining is
the sum of the entries that touch it (its grant included), each `balance_after` is the running
sum, `reserved` is the sum of the live holds, `consumed` the sum of the charges, a hold's
`charged` its charge entry. Nothing here writes (it locks one account row at a time). Used by
`manage.py reconcile_ledger` and, after every step, by the property tests.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.db.models import Sum

from . import locks
from .models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry, Lot


@dataclass(frozen=True)
class Discrepancy:
    user_id: UUID
    what: str
    cached: int
    computed: int

    def __str__(self) -> str:
        return f"{self.user_id}: {self.what} is {self.cached}, the ledger says {self.computed}"


def reconcile(user_ids: Iterable[UUID] | None = None) -> list[Discrepancy]:
    accounts = CreditAccount.objects.order_by("pk")
    if user_ids is not None:
        accounts = accounts.filter(pk__in=list(user_ids))
    found: list[Discrepancy] = []
    for user_id in list(accounts.values_list("pk", flat=True)):
        with transaction.atomic(durable=True):
            # Lock the account as every money operation does, so that no operation commits
            # between reading its entries and its lots and holds (a false discrepancy otherwise,
            # when the command runs against a live service). One account at a time, briefly.
            account = locks.account_lock(user_id)
            found.extend(_reconcile_account(account))
    return found


def _reconcile_account(account: CreditAccount) -> list[Discrepancy]:
    found: list[Discrepancy] = []

    def compare(what: str, cached: int, computed: int) -> None:
        if cached != computed:
            found.append(Discrepancy(account.pk, what, cached, computed))

    running = 0
    lot_sums: dict[int, int] = defaultdict(int)
    consumed = 0
    charged_by_key: dict[str, int] = {}
    entries = LedgerEntry.objects.filter(account=account).order_by("id")
    fields = ("id", "lot_id", "kind", "amount", "balance_after", "idempotency_key")
    for entry in entries.values(*fields).iterator():
        running += entry["amount"]
        lot_sums[entry["lot_id"]] += entry["amount"]
        if entry["kind"] == EntryKind.CHARGE:
            consumed -= entry["amount"]
            charged_by_key[entry["idempotency_key"]] = -entry["amount"]
        compare(f"balance_after of entry {entry['id']}", entry["balance_after"], running)
    compare("balance", account.balance, running)
    compare("consumed", account.consumed, consumed)

    live = Hold.objects.filter(account=account, status=HoldStatus.LIVE)
    compare("reserved", account.reserved, live.aggregate(total=Sum("amount"))["total"] or 0)
    held_by_lot: dict[int, int] = defaultdict(int)
    for lot_id, amount in live.values_list("lot_id", "amount"):
        held_by_lot[lot_id] += amount

    # A hold's `charged` is what its one charge entry says (keyed `charge:<hold id>`).
    for hold_id, request_id, charged in Hold.objects.filter(account=account).values_list(
        "pk", "request_id", "charged"
    ):
        compare(
            f"charged of hold {request_id}", charged, charged_by_key.get(f"charge:{hold_id}", 0)
        )

    for lot in Lot.objects.filter(account=account):
        compare(f"remaining of lot {lot.pk}", lot.remaining, lot_sums.get(lot.pk, 0))
        compare(f"reserved of lot {lot.pk}", lot.reserved, held_by_lot.get(lot.pk, 0))
        if lot.expired_at is not None:
            # An expired lot keeps only what live holds took from it before it expired.
            compare(f"remaining of expired lot {lot.pk}", lot.remaining, lot.reserved)
    return found
