"""Money formatting: integer nano-USD to the exact decimal strings users read."""

from __future__ import annotations

from decimal import Decimal

NANOS_PER_USD = 10**9


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def format_usd(nanos: int) -> str:
    """Exact USD: at least 6 decimals, up to 9 when the amount needs them.

    1500 -> "0.0000015", 1234567000 -> "1.234567", 0 -> "0.000000".
    (Reports and budget views format thousands of amounts per call; the
    common whole-micro-dollar case is one division and one format.)
    """
    n = int(nanos)
    if n < 0:
        return "-" + format_usd(-n)
    whole, frac = divmod(n, NANOS_PER_USD)
    if frac % 1000 == 0:
        return f"{whole}.{frac // 1000:06d}"
    return f"{whole}.{f'{frac:09d}'.rstrip('0')}"
