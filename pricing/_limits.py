"""How large a call to a model can be: its context window and its longest answer.

Optional per-family fields of the price table, written with a period's rates:

    [[models."gpt-4o-mini"]]
    effective = "2024-07-18"
    context_window = 128000        # prompt + answer, tokens
    max_output_tokens = 16384      # the longest answer the model gives

They price nothing. Budgets use them to bound what a call can cost before it
is made: a call that sets no output cap is reserved at `max_output_tokens`,
and `context_window` bounds the prompt a call can carry that faregate cannot
see (stored responses, conversations, files). A period that does not state
them takes them from the family's other periods.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ._table import Price

LIMIT_KEYS: tuple[str, ...] = ("context_window", "max_output_tokens")

#: Sane upper bound on either field (a typo must not become a huge reservation).
MAX_TOKENS = 100_000_000


def read_limits(raw: Mapping[str, Any], where: str) -> dict[str, int]:
    """The limit fields a period states, checked (positive whole token counts)."""
    from ._table import PriceTableError

    out: dict[str, int] = {}
    for key in LIMIT_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TOKENS:
            raise PriceTableError(f"{where}.{key}: expected a positive token count")
        out[key] = value
    return out


def fill_limits(periods: list["Price"]) -> list["Price"]:
    """Periods that state no limits take the family's (the latest period stating them)."""
    known: dict[str, int] = {}
    for period in periods:
        for key in LIMIT_KEYS:
            value = getattr(period, key)
            if value is not None:
                known[key] = value
    if not known:
        return periods
    return [replace(p, **{k: v for k, v in known.items() if getattr(p, k) is None})
            for p in periods]


def limits_of(entry: "Price | None") -> dict[str, int]:
    """A period's limit fields, to carry over to a config override of its rates."""
    if entry is None:
        return {}
    return {k: getattr(entry, k) for k in LIMIT_KEYS if getattr(entry, k) is not None}
