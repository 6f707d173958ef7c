"""The price table: which rates were in force for a model at a time.

A table maps each family to its price periods (oldest first), plus the
aliases, the known dated snapshots, the built-in tool fees, the
service-tier factors, the shut-down dates of retired models and the
documented differences with the community price table. It is immutable: an
operator's price file (`layered_over`) and config overrides produce new
tables whose version strings name them, so a ledger row's `price_version`
always identifies the exact rates used. Lookups are dictionary walks,
memoised per table; reading a table in is `_load`'s job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from ._period import OVERRIDE_SOURCE, Price, ToolPrice
from ._read import LIMIT_KEYS, PriceTableError, canon, limit, rates
from ._resolve import normalise_name, resolve_family

MEMO_SIZE = 4096
_MISS = object()


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
    #: model name -> (shut-down date, source): no longer served, still priced for old records
    retired: Mapping[str, tuple[date, str]] = field(default_factory=dict)
    #: model name -> why faregate's figures differ from the community table's (`--compare`)
    differences: Mapping[str, str] = field(default_factory=dict)

    #: model name -> family, memoised (names are caller-chosen: bounded, reset when full)
    _resolved: dict[str, str | None] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    #: (id of a period in `periods`, classes, rate) -> per-token rates (see `per_token`)
    _per_token: dict[tuple, tuple[Decimal, ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

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

    def alias_target(self, name: str) -> str | None:
        """The priced model an alias (a deployment name, a `-latest` name) stands for."""
        return self.aliases.get(normalise_name(name))

    def retired_on(self, model: str) -> date | None:
        """The day `model` (or the family it resolves to) was shut down, or None."""
        n = normalise_name(model) if isinstance(model, str) else ""
        hit = self.retired.get(n)
        if hit is None:
            family = self.resolve(model)
            hit = self.retired.get(family) if family else None
        return hit[0] if hit else None

    @property
    def shipped_version(self) -> str:
        """The version of the table this one was built on (before `+table.`/`+config.`)."""
        return self.version.split("+", 1)[0]

    def age_days(self, today: date) -> int | None:
        """Days since the shipped table's version date, or None if it is not a date."""
        try:
            made = date.fromisoformat(self.shipped_version[:10])
        except ValueError:
            return None
        return (today - made).days

    def layered_over(self, base: "PriceTable") -> "PriceTable":
        """This (operator) table over `base`: each family, alias, tool fee, tier factor
        and retirement given here replaces the base's; everything else is kept."""
        return PriceTable(
            version=f"{base.version}+table.{self.version}",
            periods={**base.periods, **self.periods},
            aliases={**base.aliases, **self.aliases},
            snapshots={**base.snapshots, **self.snapshots},
            tools={**base.tools, **self.tools},
            tier_factors={**base.tier_factors, **self.tier_factors},
            retired={**base.retired, **self.retired},
            differences={**base.differences, **self.differences},
        )

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
            given = {k: v for k, v in raw_rates.items() if v is not None}
            where = f"pricing.models.{raw_name}"
            own = rates(given, where, meta=LIMIT_KEYS)
            shipped = self.entry(name)  # new rates; what the model can do stays, unless given
            limits = {key: limit(given.get(key), f"{where}.{key}")
                      or (getattr(shipped, key) if shipped else None) for key in LIMIT_KEYS}
            periods[name] = (Price(family=name, rates=own, source=OVERRIDE_SOURCE, **limits),)
            canonical[name] = {k: canon(v) for k, v in sorted(own.items())}
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(blob).hexdigest()[:8]
        base = self.version.split("+config.", 1)[0]
        return replace(self, version=f"{base}+config.{digest}", periods=periods)

    def with_aliases(self, aliases: Mapping[str, str]) -> "PriceTable":
        """A copy where each name in `aliases` is priced as the model it names.

        For names the table cannot derive, such as an Azure deployment
        (`my-deployment = "gpt-4o-mini"`). A target may be any name the table
        resolves (family, snapshot, alias) and the name is priced at its
        family's rates. A name that has its own entry, or a target the table
        cannot price, raises PriceTableError.
        """
        if not aliases:
            return self
        merged = dict(self.aliases)
        for raw_name, raw_target in aliases.items():
            name = normalise_name(str(raw_name))
            if not name:
                raise PriceTableError("pricing.aliases: empty model name")
            if name in self.periods:
                raise PriceTableError(f"pricing.aliases.{raw_name}: {name!r} has its own prices")
            family = self.resolve(str(raw_target))
            if family is None:
                raise PriceTableError(f"pricing.aliases.{raw_name}: unknown model {raw_target!r}")
            merged[name] = family
        return replace(self, aliases=merged)


def resolve_model(name: str, table: PriceTable) -> str | None:
    """The family `name` resolves to in `table` (the table in force), or None."""
    return table.resolve(name)


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
