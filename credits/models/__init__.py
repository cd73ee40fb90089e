"""Models of the ledger (`credits`): accounts, lots, append-only entries, holds and the credit
settings; the design is in `ledger`'s docstring. The gateway's, payments' and usage's models live
in their own apps (`credits.gateway.models`, `credits.payments.models`).
"""

from .events import Event, EventType
from .ledger import (
    MAX_CREDITS,
    CreditAccount,
    CreditSettings,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    Lot,
    LotSource,
)
from .reconcile import ReconcileCheckpoint, ReconcileLotCheckpoint

__all__ = [
    "MAX_CREDITS",
    "CreditAccount",
    "CreditSettings",
    "EntryKind",
    "Event",
    "EventType",
    "Hold",
    "HoldStatus",
    "LedgerEntry",
    "Lot",
    "LotSource",
    "ReconcileCheckpoint",
    "ReconcileLotCheckpoint",
]
