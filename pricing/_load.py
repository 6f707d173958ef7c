"""Loading a price table: the shipped `prices.toml`, or any TOML text in its format.

The document has seven sections — `[[models."<family>"]]` price periods,
`[aliases]`, `[snapshots]` (the dated names each family is known to have),
`[[tools.<name>]]` built-in tool fees, `[tier_factors]`, `[retired]`
(shut-down dates) and `[differences]` (why a figure differs from the
community table) — each read by its own function here, and every value
checked by `_read`. Money is read as Decimal straight from the TOML text,
never through a float. The shipped table is read once per process; an
operator's price file is read over it (`loads_price_table(text, base=…)`)
and config overrides build new tables from either (`with_overrides`).

A period without `context_window` / `max_output_tokens` keeps its
predecessor's: limits rarely change when a price does.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from dataclasses import replace

from ._period import TIERS, Price, ToolPrice
from ._read import (
    PriceTableError,
    money,
    read_date,
    read_period,
    read_tool_period,
    source,
    table_at,
)
from ._resolve import normalise_name
from ._table import PriceTable


_SECTIONS = ("version", "models", "aliases", "snapshots", "tools", "tier_factors", "retired",
             "differences")
MAX_VERSION = 64


def parse_price_table(data: Mapping[str, Any], base: PriceTable | None = None) -> PriceTable:
    """Build a table from parsed TOML (floats already Decimal).

    With `base`, the document is an operator's file read over it: its
    references (aliases, snapshots, retirements) may name the base's models.
    """
    for key in data:
        if key not in _SECTIONS:
            raise PriceTableError(f"{key}: unknown section")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > MAX_VERSION:
        raise PriceTableError("version: missing (a short string such as the date you wrote it)")
    periods = _models(data.get("models", {}))
    known = {**(base.periods if base else {}), **periods}
    table = PriceTable(
        version=version.strip(),
        periods=periods,
        aliases=_aliases(data.get("aliases", {}), known),
        snapshots=_snapshots(data.get("snapshots", {}), known),
        tools=_tools(data.get("tools", {})),
        tier_factors=_tier_factors(data.get("tier_factors", {})),
        retired=_retired(data.get("retired", {})),
        differences=_differences(data.get("differences", {})),
    )
    return table.layered_over(base) if base is not None else table


def loads_price_table(text: str, base: PriceTable | None = None) -> PriceTable:
    """Parse a price table from TOML text (money read as Decimal, never float);
    with `base`, an operator's file read over that table."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"not valid TOML: {exc}") from None
    return parse_price_table(data, base)


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
        periods[name] = _inherit_limits(built)
    return periods


def _inherit_limits(built: list[Price]) -> tuple[Price, ...]:
    out: list[Price] = []
    for p in built:
        if out and (p.context_window is None or p.max_output_tokens is None):
            prev = out[-1]
            p = replace(p, context_window=p.context_window or prev.context_window,
                        max_output_tokens=p.max_output_tokens or prev.max_output_tokens)
        out.append(p)
    return tuple(out)


def _retired(raw: Any) -> dict[str, tuple[date, str]]:
    retired: dict[str, tuple[date, str]] = {}
    for name, entry in table_at(raw, "retired").items():
        where = f"retired.{name}"
        rule = table_at(entry, where)
        for key in rule:
            if key not in ("date", "source"):
                raise PriceTableError(f"{where}.{key}: unknown key")
        if "date" not in rule:
            raise PriceTableError(f"{where}.date: missing (the shut-down date)")
        retired[normalise_name(str(name))] = (read_date(rule["date"], f"{where}.date"),
                                              source(rule, where))
    return retired


def _differences(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, why in table_at(raw, "differences").items():
        if not isinstance(why, str) or not why.strip():
            raise PriceTableError(f"differences.{name}: expected the reason as text")
        out[normalise_name(str(name))] = why.strip()
    return out


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
