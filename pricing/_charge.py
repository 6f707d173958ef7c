"""A priced call: usage times the rates in force, with the breakdown kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from ._usage import Usage

NANO = Decimal("1e-9")


def to_nanos(amount: Decimal) -> int:
    """Exact USD amount -> integer nano-USD (the ledger's unit), half-even."""
    return int((amount / NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass(slots=True)  # not frozen: built twice per call; treat as immutable
class Charge:
    """The cost of one call.

    `cost` is exact (products of integer counts and decimal rates, no
    rounding). `breakdown` maps each billed class (`input`, `output`,
    `seconds`, `characters`, `images`, ...) to its exact part of `cost`.
    `priced` is false when the model has no price: the call is still
    recorded, at zero, and flagged. `savings` is what the cached tokens
    saved: their count times (the uncached rate − the cached rate).
    """

    model: str  # the model as the caller/upstream named it
    family: str | None  # the price-table entry it resolved to
    usage: Usage
    cost: Decimal
    breakdown: dict[str, Decimal] = field(default_factory=dict)
    price_version: str = ""
    priced: bool = True
    savings: Decimal = Decimal(0)

    @property
    def cost_nanos(self) -> int:
        return to_nanos(self.cost)

    @property
    def savings_nanos(self) -> int:
        return to_nanos(self.savings)
