"""Loading a price table: the shipped `prices.toml`, or any TOML text in its format.

The document has five sections — `[[models."<family>"]]` price periods,
`[aliases]`, `[snapshots]` (the dated names each family is known to have),
`[[tools.<name>]]` built-in tool fees and `[tier_factors]` — each read by
its own function here, and every value checked by `_read`. Money is read as
Decimal straight from the TOML text, never through a float. The shipped
table is read once per process; operators' files and config overrides build
new tables from it (see `PriceTable.with_overrides`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from ._period import TIERS, Price, ToolPrice
from ._read import PriceTableError, money, read_period, read_tool_period, source, table_at
from ._resolve import normalise_name
from ._table import PriceTable


def parse_price_table(data: Mapping[str, Any]) -> PriceTable:
    """Build a table from parsed TOML (floats already Decimal)."""
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise PriceTableError("version: missing")
    periods = _models(data.get("models", {}))
    return PriceTable(
        version=version,
        periods=periods,
        aliases=_aliases(data.get("aliases", {}), periods),
        snapshots=_snapshots(data.get("snapshots", {}), periods),
        tools=_tools(data.get("tools", {})),
        tier_factors=_tier_factors(data.get("tier_factors", {})),
    )


def loads_price_table(text: str) -> PriceTable:
    """Parse a price table from TOML text (money read as Decimal, never float)."""
    return parse_price_table(tomllib.loads(text, parse_float=Decimal))


@lru_cache(maxsize=1)
def load_price_table() -> PriceTable:
    """The shipped table (`prices.toml`), read once per process."""
    text = resources.files(__package__).joinpath("prices.toml").read_text("utf-8")
    return loads_price_table(text)


def _models(models: Any) -> dict[str, tuple[Price, ...]]:
    if not isinstance(models, Mapping):
        raise PriceTableError("models: expected a table")
    periods: dict[str, tuple[Price, ...]] = {}
    for raw_name, raw in models.items():
        name = normalise_name(raw_name)
        entries = raw if isinstance(raw, list) else [raw]
        built = []
        for i, item in enumerate(entries):
            if not isinstance(item, Mapping):
                raise PriceTableError(f"models.{raw_name}[{i}]: expected a table")
            built.append(read_period(name, item, f"models.{raw_name}[{i}]"))
        built.sort(key=lambda p: p.effective or date.min)
        periods[name] = tuple(built)
    return periods


def _aliases(raw: Any, periods: Mapping[str, tuple[Price, ...]]) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise PriceTableError("aliases: expected a table")
    aliases = {normalise_name(k): normalise_name(str(v)) for k, v in raw.items()}
    for alias, target in aliases.items():
        if target not in periods:
            raise PriceTableError(f"aliases.{alias}: unknown model {target!r}")
    return aliases


def _snapshots(raw: Any, periods: Mapping[str, tuple[Price, ...]]) -> dict[str, frozenset[str]]:
    snapshots: dict[str, frozenset[str]] = {}
    for family, names in table_at(raw, "snapshots").items():
        f = normalise_name(family)
        if f not in periods:
            raise PriceTableError(f"snapshots.{family}: unknown model {family!r}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PriceTableError(f"snapshots.{family}: expected a list of model names")
        snapshots[f] = frozenset(normalise_name(n) for n in names)
    return snapshots


def _tools(raw: Any) -> dict[str, tuple[ToolPrice, ...]]:
    tools: dict[str, tuple[ToolPrice, ...]] = {}
    for raw_name, raw_periods in table_at(raw, "tools").items():
        entries = raw_periods if isinstance(raw_periods, list) else [raw_periods]
        built = [read_tool_period(str(raw_name), table_at(item, f"tools.{raw_name}[{i}]"),
                                  f"tools.{raw_name}[{i}]") for i, item in enumerate(entries)]
        built.sort(key=lambda p: p.effective or date.min)
        tools[str(raw_name)] = tuple(built)
    return tools


def _tier_factors(raw: Any) -> dict[str, tuple[Decimal, str]]:
    tier_factors: dict[str, tuple[Decimal, str]] = {}
    for tier, rule_raw in table_at(raw, "tier_factors").items():
        where = f"tier_factors.{tier}"
        if tier not in TIERS:
            raise PriceTableError(f"{where}: unknown tier (one of {', '.join(TIERS)})")
        rule = table_at(rule_raw, where)
        if "factor" not in rule:
            raise PriceTableError(f"{where}.factor: missing")
        tier_factors[tier] = (money(rule["factor"], f"{where}.factor"), source(rule, where))
    return tier_factors
