"""The one clock of the ledger.

Every "now" used to decide expiry, hold lifetimes and rate-limit windows comes from `now()`.
Tests move it with `advance()` instead of sleeping; production never touches the offset.
The offset is process-wide (all threads see the same time), which is what race tests need.
"""

from datetime import datetime, timedelta

from django.utils import timezone

_offset = timedelta(0)


def now() -> datetime:
    return timezone.now() + _offset


def advance(delta: timedelta) -> None:
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta(0)
