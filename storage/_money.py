"""Money formatting: integer nano-USD to the exact decimal strings users read."""

from __future__ import annotations

from decimal import Decimal

NANOS_PER_USD = 10**9


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def format_usd(nanos: int) -> str:
    """Exact USD: at least 6 decimals, up to 9 when the amount needs them.

    1500 -> "0.0000015", 1234567000 -> "1.234567", 0 -> "0.000000".
    """
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(int(nanos)), NANOS_PER_USD)
    digits = f"{frac:09d}".rstrip("0")
    digits = digits.ljust(6, "0")
    return f"{sign}{whole}.{digits}"
