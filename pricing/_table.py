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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from typing import Any

from ._resolve import normalise_name, resolve_family
from ._usage import TOKEN_CLASSES

#: Rates that are not per 1M tokens.
UNIT_RATES: tuple[str, ...] = ("per_second", "per_minute", "per_1k_chars", "per_image")

#: Every rate key a price (or a config override) may carry.
RATE_KEYS: tuple[str, ...] = TOKEN_CLASSES + UNIT_RATES

_PERIOD_META = ("effective", "source", "per_image_variants")

OVERRIDE_SOURCE = "config"


class PriceTableError(ValueError):
    """The price data (shipped file or overrides) is not well formed."""


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

    def rate(self, name: str) -> Decimal | None:
        return self.rates.get(name)

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
class PriceTable:
    """Families -> price periods (oldest first), plus explicit aliases."""

    version: str
    periods: Mapping[str, tuple[Price, ...]]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def families(self) -> tuple[str, ...]:
        return tuple(self.periods)

    def resolve(self, model: str) -> str | None:
        """The family `model` is priced as (see `_resolve`), or None."""
        return resolve_family(model, self.periods.__contains__, self.aliases)

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
            rates: dict[str, Decimal] = {}
            for key, value in raw_rates.items():
                if value is None:
                    continue
                if key not in RATE_KEYS:
                    raise PriceTableError(f"pricing.models.{raw_name}.{key}: unknown rate")
                rates[key] = _money(value, f"pricing.models.{raw_name}.{key}")
            periods[name] = (Price(family=name, rates=rates, source=OVERRIDE_SOURCE),)
            canonical[name] = {k: _canon(v) for k, v in sorted(rates.items())}
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(blob).hexdigest()[:8]
        base = self.version.split("+config.", 1)[0]
        return PriceTable(version=f"{base}+config.{digest}", periods=periods, aliases=self.aliases)


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
    rates: dict[str, Decimal] = {}
    for key, value in raw.items():
        if key in _PERIOD_META:
            continue
        if key not in RATE_KEYS:
            raise PriceTableError(f"{where}.{key}: unknown rate")
        rates[key] = _money(value, f"{where}.{key}")
    variants_raw = raw.get("per_image_variants", {})
    if not isinstance(variants_raw, Mapping):
        raise PriceTableError(f"{where}.per_image_variants: expected a table")
    variants = {
        str(k).lower(): _money(v, f"{where}.per_image_variants.{k}")
        for k, v in variants_raw.items()
    }
    if "effective" not in raw:
        raise PriceTableError(f"{where}.effective: missing")
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise PriceTableError(f"{where}.source: expected a string")
    return Price(
        family=family,
        rates=rates,
        per_image_variants=variants,
        effective=_date(raw["effective"], f"{where}.effective"),
        source=source,
    )


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
        periods[name] = tuple(built)
    aliases_raw = data.get("aliases", {})
    if not isinstance(aliases_raw, Mapping):
        raise PriceTableError("aliases: expected a table")
    aliases = {normalise_name(k): normalise_name(str(v)) for k, v in aliases_raw.items()}
    for alias, target in aliases.items():
        if target not in periods:
            raise PriceTableError(f"aliases.{alias}: unknown model {target!r}")
    return PriceTable(version=version, periods=periods, aliases=aliases)


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
