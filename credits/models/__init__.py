"""Models of the `credits` app, one module per concern (each opens with its design):

- `ledger`: accounts, lots, append-only entries, holds, tiers (the heart; see its docstring);
- `usage`: what each settled gateway request used (issue: gateway hot path, usage tracking);
- `payments`: packages, purchases and Stripe events.
"""

from .ledger import (
    CreditAccount,
    CreditSettings,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    Lot,
    LotSource,
    Tier,
)
from .payments import Package, Purchase, StripeEvent  # noqa: F401
from .usage import UsageOutcome, UsageRecord  # noqa: F401
from .usage_buckets import UsageBucket  # noqa: F401

__all__ = [
    "CreditAccount",
    "CreditSettings",
    "EntryKind",
    "Hold",
    "HoldStatus",
    "LedgerEntry",
    "Lot",
    "LotSource",
    "Tier",
]
