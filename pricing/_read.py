"""Reading price data: untrusted TOML values -> rates, dates and periods.

Both the shipped `prices.toml` (or an operator's price file) and the config's
`[pricing.models]` overrides come through here. Every value is checked —
money is a finite, non-negative Decimal (never a float), dates are
YYYY-MM-DD, only known rate keys are accepted — and anything else raises
`PriceTableError` naming its table path, so a typo never prices a call at 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ._period import RATE_KEYS, TIERS, UNCONFIRMED, LongContext, Price, ToolPrice
from ._resolve import normalise_name

#: Optional per-model token limits (a price entry or a config override may give them).
LIMIT_KEYS: tuple[str, ...] = ("context_window", "max_output_tokens")
_LIMITS = LIMIT_KEYS
_PERIOD_META = ("effective", "source", "per_image_variants", "long_context", "confidence",
                *_LIMITS) + TIERS
#: A token limit above this is a typo, not a model (a billion tokens).
MAX_LIMIT = 10**9
_TOOL_KEYS = ("effective", "source", "per_call", "variants", "by_model")


class PriceTableError(ValueError):
    """The price data (shipped file or overrides) is not well formed."""


def money(value: Any, where: str) -> Decimal:
    """A finite, non-negative amount (TOML number or string) as Decimal."""
    if isinstance(value, bool):
        raise PriceTableError(f"{where}: expected a number")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise PriceTableError(f"{where}: expected a number, got {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise PriceTableError(f"{where}: must be a non-negative number")
    return amount


def canon(value: Decimal) -> str:
    """One spelling per amount, so 1.0 and 1.00 hash alike."""
    return format(value.normalize(), "f")


def table_at(value: Any, where: str) -> Mapping[str, Any]:
    """`value` if it is a TOML table, else an error naming `where`."""
    if not isinstance(value, Mapping):
        raise PriceTableError(f"{where}: expected a table")
    return value


def rates(raw: Mapping[str, Any], where: str, meta: tuple[str, ...] = ()) -> dict[str, Decimal]:
    """Rate key -> amount; keys in `meta` are skipped, any other unknown key is an error."""
    out: dict[str, Decimal] = {}
    for key, value in raw.items():
        if key in meta:
            continue
        if key not in RATE_KEYS:
            raise PriceTableError(f"{where}.{key}: unknown rate")
        out[key] = money(value, f"{where}.{key}")
    return out


def read_period(family: str, raw: Mapping[str, Any], where: str) -> Price:
    """One `[[models."<family>"]]` entry."""
    own = rates(raw, where, meta=_PERIOD_META)
    variants = {
        str(k).lower(): money(v, f"{where}.per_image_variants.{k}")
        for k, v in table_at(raw.get("per_image_variants", {}),
                             f"{where}.per_image_variants").items()
    }
    if "effective" not in raw:
        raise PriceTableError(f"{where}.effective: missing")
    tiers = {
        tier: rates(table_at(raw[tier], f"{where}.{tier}"), f"{where}.{tier}", meta=("source",))
        for tier in TIERS if tier in raw
    }
    tier_sources = {tier: source(raw[tier], f"{where}.{tier}") for tier in tiers}
    long_context = None
    if "long_context" in raw:
        long_context = _long_context(raw["long_context"], f"{where}.long_context")
    return Price(
        family=family,
        rates=own,
        per_image_variants=variants,
        effective=_date(raw["effective"], f"{where}.effective"),
        source=source(raw, where),
        tiers=tiers,
        tier_sources={t: src for t, src in tier_sources.items() if src},
        long_context=long_context,
        context_window=limit(raw.get("context_window"), f"{where}.context_window"),
        max_output_tokens=limit(raw.get("max_output_tokens"), f"{where}.max_output_tokens"),
        confidence=_confidence(raw.get("confidence"), f"{where}.confidence"),
    )


def limit(value: Any, where: str) -> int | None:
    """A token limit: a positive integer, or None when not given."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LIMIT:
        raise PriceTableError(f"{where}: expected a positive token count")
    return value


def _confidence(value: Any, where: str) -> str:
    if value is None or value == "confirmed":
        return ""
    if value != UNCONFIRMED:
        raise PriceTableError(f"{where}: expected \"{UNCONFIRMED}\" (or leave it out)")
    return UNCONFIRMED


def read_tool_period(name: str, raw: Mapping[str, Any], where: str) -> ToolPrice:
    """One `[[tools.<name>]]` entry."""
    for key in raw:
        if key not in _TOOL_KEYS:
            raise PriceTableError(f"{where}.{key}: unknown key")
    if "effective" not in raw:
        raise PriceTableError(f"{where}.effective: missing")
    variants = {str(k).lower(): money(v, f"{where}.variants.{k}")
                for k, v in table_at(raw.get("variants", {}), f"{where}.variants").items()}
    by_model = {normalise_name(str(k)): money(v, f"{where}.by_model.{k}")
                for k, v in table_at(raw.get("by_model", {}), f"{where}.by_model").items()}
    per_call = money(raw["per_call"], f"{where}.per_call") if "per_call" in raw else None
    if per_call is None and not variants:
        raise PriceTableError(f"{where}: needs per_call or variants")
    return ToolPrice(name=name, per_call=per_call, variants=variants, by_model=by_model,
                     effective=_date(raw["effective"], f"{where}.effective"),
                     source=source(raw, where))


def source(raw: Mapping[str, Any], where: str) -> str:
    """Where a period's numbers come from (a URL, or "" if not given)."""
    value = raw.get("source", "")
    if not isinstance(value, str):
        raise PriceTableError(f"{where}.source: expected a string")
    return value


def read_date(value: Any, where: str) -> date:
    """A YYYY-MM-DD date (TOML date or string)."""
    return _date(value, where)


def _date(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise PriceTableError(f"{where}: expected a YYYY-MM-DD date, got {value!r}")


def _long_context(value: Any, where: str) -> LongContext:
    raw = table_at(value, where)
    above = raw.get("above")
    if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
        raise PriceTableError(f"{where}.above: expected a positive token count")
    factors = rates(raw, where, meta=("above", "source"))
    if not factors:
        raise PriceTableError(f"{where}: no factors (e.g. input = 2, output = 1.5)")
    return LongContext(above=above, factors=factors, source=source(raw, where))
