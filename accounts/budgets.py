"""Key budgets: the UTC calendar periods and the spend counters kept on the key row.

The same rules are written in SQL in `credits/gateway/sql/` (the hot path on PostgreSQL); the
differential test (tests/gateway/test_differential.py) proves both equal. A counter belongs to
the period starting at its `*_start`; read in a later period it is 0, and the next charge starts
it again from 1. Nothing resets counters on a schedule: the period start is the reset.
"""

from datetime import datetime, timedelta

from .models import ApiKey

DAY, MONTH, TOTAL = "day", "month", "total"


def period_start(period: str, now: datetime) -> datetime | None:
    """The UTC start of the calendar day or month holding `now` (None for `total`)."""
    if period == DAY:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == MONTH:
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def period_end(period: str, now: datetime) -> datetime | None:
    """When the period holding `now` ends and its counter reads 0 again (None: never)."""
    start = period_start(period, now)
    if start is None:
        return None
    if period == DAY:
        return start + timedelta(days=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def counted(value: int, start: datetime | None, current: datetime | None) -> int:
    """A period counter as read at a time whose period starts at `current`."""
    return value if start is not None and start == current else 0


def key_spent(key: ApiKey, now: datetime, period: str | None = None) -> int:
    """Credits charged through `key` in the current `period` (its budget's by default; a key
    without a budget shows its total)."""
    period = period or key.budget_period or TOTAL
    if period == DAY:
        return counted(key.spent_day, key.spent_day_start, period_start(DAY, now))
    if period == MONTH:
        return counted(key.spent_month, key.spent_month_start, period_start(MONTH, now))
    return key.spent_total


def key_budget_exceeded(key: ApiKey, now: datetime, amount: int = 1) -> bool:
    """True when charging `amount` more, on top of what is spent in the period and what live
    holds of the key may still charge, would pass the key's budget."""
    if key.budget_credits is None:
        return False
    return key_spent(key, now) + key.held + amount > key.budget_credits


def key_charge(key: ApiKey, now: datetime, amount: int) -> list[str]:
    """Count a charge of `amount` in every period counter of `key` (in memory); the fields to
    save. The caller holds the lock of the key's credit account."""
    day, month = period_start(DAY, now), period_start(MONTH, now)
    key.spent_day = counted(key.spent_day, key.spent_day_start, day) + amount
    key.spent_day_start = day
    key.spent_month = counted(key.spent_month, key.spent_month_start, month) + amount
    key.spent_month_start = month
    key.spent_total += amount
    return ["spent_day", "spent_day_start", "spent_month", "spent_month_start", "spent_total"]


def model_allowed(key: ApiKey, model: str | None) -> bool:
    if key.allowed_models is None:
        return True
    return model is not None and model in key.allowed_models
