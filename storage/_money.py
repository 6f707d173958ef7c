"""Money formatting: integer nano-USD to the exact decimal strings users read."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

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


def plain_decimal(value: Decimal) -> str:
    """A decimal as plain digits, never in exponent form: 40 -> "40", 1.50 -> "1.5"."""
    if not value.is_finite():
        return str(value)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


_CENT = Decimal("0.01")


def human_usd(nanos: int) -> str:
    """USD for people: cents from $1 up ("$1,234.57"), 4 significant digits below
    ("$0.538956333" -> "$0.5390"); an amount below $1 that needs fewer digits is shown
    as it is ("$0.001", "$0.0000015"). Exact decimal arithmetic, never floats.
    Machines (APIs, JSON, CSV) get `format_usd`."""
    usd = Decimal(int(nanos)).scaleb(-9)
    sign, usd = ("-" if usd < 0 else ""), abs(usd)
    if usd == 0:
        return "$0.00"
    if usd >= 1:
        return f"{sign}${usd.quantize(_CENT, rounding=ROUND_HALF_UP):,}"
    rounded = usd.quantize(Decimal(1).scaleb(usd.adjusted() - 3), rounding=ROUND_HALF_UP)
    if rounded.adjusted() > usd.adjusted():  # $0.099995 -> $0.1000, not $0.10000
        rounded = rounded.quantize(Decimal(1).scaleb(rounded.adjusted() - 3))
    if rounded >= 1:  # $0.99995 rounds up to a dollar
        return f"{sign}${rounded.quantize(_CENT):,}"
    if rounded == usd:  # exact in 4 digits or fewer: no trailing zeros it does not have
        return f"{sign}${plain_decimal(usd)}"
    return f"{sign}${rounded:f}"
