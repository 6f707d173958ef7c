"""The versioned price table: which rates were in force for a model at a time.

The table ships as `prices.toml` next to this module and is read once (first
use); after that every lookup is a dictionary walk. A table is immutable:
config overrides produce a new table whose version string names them, so a
ledger row's `price_version` always identifies the exact rates used.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from functools import lru_cache
from importlib import resources
from typing import Any

from ._limits import LIMIT_KEYS, fill_limits, limits_of, read_limits
from ._resolve import normalise_name, resolve_family
from ._usage import TOKEN_CLASSES

#: Rates that are not per 1M tokens.
UNIT_RATES: tuple[str, ...] = ("per_second", "per_minute", "per_1k_chars", "per_image")

#: Every rate key a price (or a config override) may carry.
RATE_KEYS: tuple[str, ...] = TOKEN_CLASSES + UNIT_RATES

#: Service tiers a period may price on its own (`default` is the base rates).
TIERS: tuple[str, ...] = ("priority", "ultrafast", "flex", "batch", "scale")

#: Other names a response may give a tier ("fast" is priority's name since 2026-07-30).
TIER_ALIASES = {"fast": "priority"}

#: Spellings of the standard tier in responses (`auto` is a request setting).
DEFAULT_TIERS = frozenset({"default", "standard", "auto", ""})

_PERIOD_META = ("effective", "source", "per_image_variants", "long_context") + TIERS + LIMIT_KEYS

OVERRIDE_SOURCE = "config"

MEMO_SIZE = 4096
_MISS = object()


class PriceTableError(ValueError):
    """The price data (shipped file or overrides) is not well formed."""


@dataclass(frozen=True, slots=True)
class LongContext:
    """Above `above` prompt tokens, every class is billed at rate × its factor.

    A class without its own factor takes its fallback class's (cached_input
    follows input); a class with neither is not scaled.
    """

    above: int
    factors: dict[str, Decimal]
    source: str = ""


@dataclass(frozen=True, slots=True)
class Price:
    """The rates of one model family for one period.

    `rates` maps token classes to USD per 1M tokens and `per_second`,
    `per_minute`, `per_1k_chars`, `per_image` to USD per unit; a class that is
    absent has no own rate. `per_image_variants` maps "quality:size" or "size"
    to USD per image (the first listed variant of a size is its default).
    """

    family: str
    rates: dict[str, Decimal]
    per_image_variants: dict[str, Decimal] = field(default_factory=dict)
    effective: date | None = None  # None: always in force (config overrides)
    source: str = ""
    tiers: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # tier -> own rates
    long_context: LongContext | None = None
    context_window: int | None = None  # tokens, prompt + answer (see `_limits`)
    max_output_tokens: int | None = None  # the longest answer

    def rate(self, name: str) -> Decimal | None:
        return self.rates.get(name)

    def for_tier(self, tier: str | None) -> "tuple[Price, str | None]":
        """This period's rates under `tier`, and the tier they are (None: default).

        A tier's rates replace the base rates class by class; an unknown or
        unlisted tier gives the base rates and its name (the caller flags it).
        """
        if tier is None or tier in DEFAULT_TIERS:
            return self, None
        tier = TIER_ALIASES.get(tier, tier)
        own = self.tiers.get(tier)
        if own is None:
            return self, tier
        rates = {**self.rates, **own}
        return replace(self, rates=rates), tier

    @property
    def version(self) -> str:
        """`family@effective`: which period priced a charge."""
        return f"{self.family}@{self.effective.isoformat() if self.effective else 'config'}"

    def image_rate(self, size: str | None, quality: str | None) -> Decimal | None:
        """USD per image for a size/quality, falling back to `per_image`."""
        variants = self.per_image_variants
        q = quality.strip().lower() if quality else None
        if variants and not size and q:  # default size: first listed for the quality
            for key, value in variants.items():
                if key.startswith(q + ":"):
                    return value
        if variants and size:
            size = size.strip().lower()
            if q and f"{q}:{size}" in variants:
                return variants[f"{q}:{size}"]
            if size in variants:
                return variants[size]
            if not q or q in ("auto", "standard"):
                for key, value in variants.items():
                    if key.endswith(":" + size):
                        return value
        return self.rates.get("per_image")


@dataclass(frozen=True, slots=True)
class ToolPrice:
    """A built-in tool's fee for one period: USD per call (or per container).

    `variants` prices a call by a detail ("high:1024x1024" for image
    generation, "4g" for a code-interpreter container); `by_model` prices it
    by the calling model's family (shell-style patterns, first match wins).
    """

    name: str
    per_call: Decimal | None
    variants: dict[str, Decimal] = field(default_factory=dict)
    by_model: dict[str, Decimal] = field(default_factory=dict)
    effective: date | None = None
    source: str = ""

    def rate(self, variant: str | None, family: str | None) -> Decimal | None:
        if variant:
            v = variant.lower()
            if v in self.variants:
                return self.variants[v]
            quality, _, size = v.rpartition(":")
            if size and quality in ("", "auto"):
                for key, value in self.variants.items():
                    if key.endswith(":" + size):
                        return value
        if family:
            for pattern, value in self.by_model.items():
                if fnmatchcase(family, pattern):
                    return value
        return self.per_call


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Families -> price periods (oldest first), plus aliases, snapshots and tool fees."""

    version: str
    periods: Mapping[str, tuple[Price, ...]]
    aliases: Mapping[str, str] = field(default_factory=dict)
    snapshots: Mapping[str, frozenset[str]] = field(default_factory=dict)
    tools: Mapping[str, tuple[ToolPrice, ...]] = field(default_factory=dict)
    #: tier -> (factor of the base rates, source), for models without own tier rates
    tier_factors: Mapping[str, tuple[Decimal, str]] = field(default_factory=dict)

    def rates_for(self, entry: Price, tier: str | None) -> "tuple[Price, str | None, bool]":
        """`entry` under `tier`: (rates, tier name or None for default, priced?).

        Own tier rates win; else a table-wide `[tier_factors]` factor scales
        the base rates; else the base rates, reported as not priced for the tier.
        """
        rates, name = entry.for_tier(tier)
        if name is None or rates is not entry:
            return rates, name, True
        rule = self.tier_factors.get(name)
        if rule is None:
            return entry, name, False
        factor = rule[0]
        return replace(entry, rates={k: v * factor for k, v in entry.rates.items()}), name, True

    def by_family(self, model: str, family: str) -> bool:
        """True when `model` is a dated name the table does not list for `family`.

        Such a call is priced at its family's rates and flagged
        `priced_by_family`: the snapshot may be priced differently.
        """
        n = normalise_name(model)
        if n == family or n in self.aliases or n.startswith("ft:"):
            return False
        known = self.snapshots.get(family)
        return known is None or n not in known

    def tool(self, name: str, at: datetime | None = None) -> ToolPrice | None:
        """The fee in force for built-in tool `name` at `at`, or None."""
        periods = self.tools.get(name)
        if not periods:
            return None
        day = _utc_date(at)
        chosen = periods[0]
        for period in periods:
            if period.effective is None or period.effective <= day:
                chosen = period
        return chosen

    def families(self) -> tuple[str, ...]:
        return tuple(self.periods)

    #: model name -> family, memoised (names are caller-chosen: bounded, reset when full)
    _resolved: dict[str, str | None] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    #: (id of a period in `periods`, classes, rate) -> per-token rates (see `per_token`)
    _per_token: dict[tuple, tuple[Decimal, ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def per_token(self, entry: Price, classes: tuple[str, ...],
                  rate: Callable[[Price, str], Decimal | None]) -> tuple[Decimal, ...]:
        """USD per token of each class for a period of this table, after `rate`'s
        fallbacks (0 for a class with no rate). Memoised: the periods live as long
        as the table, so their ids stay theirs."""
        key = (id(entry), classes, rate)
        hit = self._per_token.get(key)
        if hit is None:
            million = Decimal(1_000_000)
            hit = tuple((rate(entry, c) or Decimal(0)) / million for c in classes)
            self._per_token[key] = hit
        return hit

    def resolve(self, model: str) -> str | None:
        """The family `model` is priced as (see `_resolve`), or None."""
        memo = self._resolved
        if isinstance(model, str):
            hit = memo.get(model, _MISS)
            if hit is not _MISS:
                return hit  # type: ignore[return-value]
        family = resolve_family(model, self.periods.__contains__, self.aliases)
        if isinstance(model, str):
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[model] = family
        return family

    def entry(self, model: str, at: datetime | None = None) -> Price | None:
        """The price in force for `model` at `at` (UTC; default now), or None.

        Periods start on their `effective` date (00:00 UTC). A call dated
        before a family's first period is priced at that first period.
        """
        family = self.resolve(model)
        if family is None:
            return None
        return _in_force(self.periods[family], _utc_date(at))

    def with_overrides(self, models: Mapping[str, Mapping[str, Any]]) -> "PriceTable":
        """A copy where each named model's rates are replaced by the given ones.

        An override replaces the whole entry (all periods, all rates: a class
        left out falls back as `price()` documents). A family override covers
        its snapshots; an override for an exact snapshot name wins over its
        family. Unknown rate keys or negative rates raise PriceTableError.
        """
        if not models:
            return self
        periods = dict(self.periods)
        canonical: dict[str, dict[str, str]] = {}
        for raw_name, raw_rates in models.items():
            name = normalise_name(str(raw_name))
            if not name:
                raise PriceTableError("pricing.models: empty model name")
            if not isinstance(raw_rates, Mapping):
                raise PriceTableError(f"pricing.models.{raw_name}: expected a table of rates")
            rates = _rates({k: v for k, v in raw_rates.items() if v is not None},
                           f"pricing.models.{raw_name}")
            periods[name] = (Price(family=name, rates=rates, source=OVERRIDE_SOURCE,
                                   **limits_of(self.entry(name))),)
            canonical[name] = {k: _canon(v) for k, v in sorted(rates.items())}
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(blob).hexdigest()[:8]
        base = self.version.split("+config.", 1)[0]
        return replace(self, version=f"{base}+config.{digest}", periods=periods)


def _in_force(periods: tuple[Price, ...], day: date) -> Price:
    chosen = periods[0]
    for period in periods:
        if period.effective is None or period.effective <= day:
            chosen = period
        else:
            break
    return chosen


def _utc_date(at: datetime | None) -> date:
    if at is None:
        return datetime.now(timezone.utc).date()
    if at.tzinfo is None:
        return at.date()
    return at.astimezone(timezone.utc).date()


def _canon(value: Decimal) -> str:
    """One spelling per amount, so 1.0 and 1.00 hash alike."""
    return format(value.normalize(), "f")


def _money(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise PriceTableError(f"{where}: expected a number")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise PriceTableError(f"{where}: expected a number, got {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise PriceTableError(f"{where}: must be a non-negative number")
    return amount


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


def _period(family: str, raw: Mapping[str, Any], where: str) -> Price:
    rates = _rates(raw, where, meta=_PERIOD_META)
    variants_raw = raw.get("per_image_variants", {})
    if not isinstance(variants_raw, Mapping):
        raise PriceTableError(f"{where}.per_image_variants: expected a table")
    variants = {
        str(k).lower(): _money(v, f"{where}.per_image_variants.{k}")
        for k, v in variants_raw.items()
    }
    if "effective" not in raw:
        raise PriceTableError(f"{where}.effective: missing")
    tiers = {}
    for tier in TIERS:
        if tier in raw:
            tiers[tier] = _rates(_table(raw[tier], f"{where}.{tier}"), f"{where}.{tier}",
                                 meta=("source",))
    long_context = None
    if "long_context" in raw:
        long_context = _long_context(raw["long_context"], f"{where}.long_context")
    return Price(
        family=family,
        rates=rates,
        per_image_variants=variants,
        effective=_date(raw["effective"], f"{where}.effective"),
        source=_source(raw, where),
        tiers=tiers,
        long_context=long_context,
        **read_limits(raw, where),
    )


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PriceTableError(f"{where}: expected a table")
    return value


def _source(raw: Mapping[str, Any], where: str) -> str:
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise PriceTableError(f"{where}.source: expected a string")
    return source


def _rates(raw: Mapping[str, Any], where: str, meta: tuple[str, ...] = ()) -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for key, value in raw.items():
        if key in meta:
            continue
        if key not in RATE_KEYS:
            raise PriceTableError(f"{where}.{key}: unknown rate")
        rates[key] = _money(value, f"{where}.{key}")
    return rates


def _long_context(value: Any, where: str) -> LongContext:
    raw = _table(value, where)
    above = raw.get("above")
    if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
        raise PriceTableError(f"{where}.above: expected a positive token count")
    factors = _rates(raw, where, meta=("above", "source"))
    if not factors:
        raise PriceTableError(f"{where}: no factors (e.g. input = 2, output = 1.5)")
    return LongContext(above=above, factors=factors, source=_source(raw, where))


def _tool_period(name: str, raw: Mapping[str, Any], where: str) -> ToolPrice:
    for key in raw:
        if key not in ("effective", "source", "per_call", "variants", "by_model"):
            raise PriceTableError(f"{where}.{key}: unknown key")
    if "effective" not in raw:
        raise PriceTableError(f"{where}.effective: missing")
    variants = {str(k).lower(): _money(v, f"{where}.variants.{k}")
                for k, v in _table(raw.get("variants", {}), f"{where}.variants").items()}
    by_model = {normalise_name(str(k)): _money(v, f"{where}.by_model.{k}")
                for k, v in _table(raw.get("by_model", {}), f"{where}.by_model").items()}
    per_call = _money(raw["per_call"], f"{where}.per_call") if "per_call" in raw else None
    if per_call is None and not variants:
        raise PriceTableError(f"{where}: needs per_call or variants")
    return ToolPrice(name=name, per_call=per_call, variants=variants, by_model=by_model,
                     effective=_date(raw["effective"], f"{where}.effective"),
                     source=_source(raw, where))


def parse_price_table(data: Mapping[str, Any]) -> PriceTable:
    """Build a table from parsed TOML (floats already Decimal)."""
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise PriceTableError("version: missing")
    models = data.get("models", {})
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
            built.append(_period(name, item, f"models.{raw_name}[{i}]"))
        built.sort(key=lambda p: p.effective or date.min)
        periods[name] = tuple(fill_limits(built))
    aliases_raw = data.get("aliases", {})
    if not isinstance(aliases_raw, Mapping):
        raise PriceTableError("aliases: expected a table")
    aliases = {normalise_name(k): normalise_name(str(v)) for k, v in aliases_raw.items()}
    for alias, target in aliases.items():
        if target not in periods:
            raise PriceTableError(f"aliases.{alias}: unknown model {target!r}")
    snapshots: dict[str, frozenset[str]] = {}
    for family, names in _table(data.get("snapshots", {}), "snapshots").items():
        f = normalise_name(family)
        if f not in periods:
            raise PriceTableError(f"snapshots.{family}: unknown model {family!r}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PriceTableError(f"snapshots.{family}: expected a list of model names")
        snapshots[f] = frozenset(normalise_name(n) for n in names)
    tools: dict[str, tuple[ToolPrice, ...]] = {}
    for raw_name, raw in _table(data.get("tools", {}), "tools").items():
        entries = raw if isinstance(raw, list) else [raw]
        built_tools = [_tool_period(str(raw_name), _table(item, f"tools.{raw_name}[{i}]"),
                                    f"tools.{raw_name}[{i}]") for i, item in enumerate(entries)]
        built_tools.sort(key=lambda p: p.effective or date.min)
        tools[str(raw_name)] = tuple(built_tools)
    tier_factors: dict[str, tuple[Decimal, str]] = {}
    for tier, raw in _table(data.get("tier_factors", {}), "tier_factors").items():
        where = f"tier_factors.{tier}"
        if tier not in TIERS:
            raise PriceTableError(f"{where}: unknown tier (one of {', '.join(TIERS)})")
        rule = _table(raw, where)
        if "factor" not in rule:
            raise PriceTableError(f"{where}.factor: missing")
        tier_factors[tier] = (_money(rule["factor"], f"{where}.factor"), _source(rule, where))
    return PriceTable(version=version, periods=periods, aliases=aliases,
                      snapshots=snapshots, tools=tools, tier_factors=tier_factors)


def loads_price_table(text: str) -> PriceTable:
    """Parse a price table from TOML text (money read as Decimal, never float)."""
    return parse_price_table(tomllib.loads(text, parse_float=Decimal))


@lru_cache(maxsize=1)
def load_price_table() -> PriceTable:
    """The shipped table (`prices.toml`), read once per process."""
    text = resources.files(__package__).joinpath("prices.toml").read_text("utf-8")
    return loads_price_table(text)


def resolve_model(name: str, table: PriceTable | None = None) -> str | None:
    """The price-table family `name` resolves to (shipped table by default)."""
    return (table or load_price_table()).resolve(name)
