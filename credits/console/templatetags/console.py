"""How the console writes numbers, money and times: `5,098`, `$29.99`, `2026-12-25 07:00:00 UTC`."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from babel.numbers import format_currency, get_currency_precision
from django import template

from config.fields import rfc3339

register = template.Library()


@register.filter
def num(value: Any) -> str:
    """Thousands separators (`5,098`); a missing value is an en dash."""
    if value is None or value == "":
        return "\u2013"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{int(value):,}"


@register.filter
def money(amount_minor: int | None, currency: str | None = "usd") -> str:
    """`2999|money:"usd"` -> `$29.99` (Babel knows each currency's symbol and exponent)."""
    if amount_minor is None or not currency:
        return "\u2013"
    code = currency.upper()
    major = Decimal(amount_minor).scaleb(-get_currency_precision(code))
    return format_currency(major, code, locale="en_US")


@register.filter
def utc(moment: datetime | str | None) -> str:
    """A time in UTC with the zone named: `2026-12-25 07:00:00 UTC`."""
    if moment is None or moment == "":
        return "never"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def iso(moment: datetime | None) -> str:
    """The machine-readable form for `<time datetime=...>`."""
    return rfc3339(moment) if moment is not None else ""
