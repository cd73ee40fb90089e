"""Money as staff read it: `$29.99 USD`, from integer minor units and a currency code.

Babel knows each currency's symbol and exponent (two decimals for USD, none for JPY, three for
KWD) and writes the thousands separators; the ISO code follows so that `$` is never ambiguous
(USD, CAD, AUD...). Amounts stay integers everywhere else; this is display only.
"""

from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision

LOCALE = "en_US"


def money_format(amount_minor: int | None, currency: str | None) -> str:
    """`2999, "usd"` -> `$29.99 USD`; `150000, "jpy"` -> `¥150,000 JPY`; None -> `-`."""
    if amount_minor is None or not currency:
        return "-"
    code = currency.upper()
    major = Decimal(amount_minor).scaleb(-get_currency_precision(code))
    return f"{format_currency(major, code, locale=LOCALE)} {code}"
