"""Helpers for the ledger tests: accounts funded with exact lots, and the checks every test
ends with (the ledger reconciles; each lot's credits are all explained by its entries)."""

from collections import defaultdict
from datetime import datetime
from uuid import UUID, uuid4

from accounts.models import User
from credits import services
from credits.models import EntryKind, LedgerEntry, Lot, LotSource
from credits.reconciliation import reconcile
from tests.factories import UserFactory


def funded_user(*lots: tuple[int, datetime | None]) -> User:
    """A user whose account holds exactly the given lots (credits, expiry), granted in order."""
    user = UserFactory.create()
    services.account_open(user_id=user.pk)
    for credits, expires_at in lots:
        services.credits_grant(
            user_id=user.pk,
            amount=credits,
            source=LotSource.PURCHASE,
            expires_at=expires_at,
            idempotency_key=f"test-grant:{uuid4()}",
        )
    return user


def lot_flows(lot: Lot) -> dict[str, int]:
    """What the entries say happened to one lot: "in" is what was put in (its grant), every
    other key is a kind of removal, as a positive number."""
    flows: dict[str, int] = defaultdict(int)
    for kind, amount in LedgerEntry.objects.filter(lot=lot).values_list("kind", "amount"):
        flows["in" if amount > 0 else kind] += abs(amount)
    return flows


def assert_every_lot_explained(user_id: UUID) -> None:
    """For every lot: granted = consumed + expired + clawed back + removed by staff + remaining,
    computed from its entries by kind, and at most one lot-expiry entry."""
    for lot in Lot.objects.filter(account_id=user_id):
        flows = lot_flows(lot)
        assert flows["in"] == lot.granted, (lot, dict(flows))
        taken = sum(
            flows[kind]
            for kind in (EntryKind.CHARGE, EntryKind.EXPIRE, EntryKind.CLAWBACK, EntryKind.ADJUST)
        )
        assert lot.granted == taken + lot.remaining, (lot, dict(flows))
        expiries = LedgerEntry.objects.filter(idempotency_key=f"expire:lot:{lot.pk}").count()
        assert expiries <= 1, lot


def assert_ledger_consistent(user_id: UUID | None = None) -> None:
    assert reconcile() == []
    if user_id is not None:
        assert_every_lot_explained(user_id)
