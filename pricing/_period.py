"""One price period: the rates a model family (or a built-in tool) had from a date.

A family's history is a tuple of periods, oldest first (see `_table`); each
period holds its own rates per token class and per unit, its service-tier
rates and its long-context rule. Everything here is an immutable value with
small lookups on it; reading the data in is `_read`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from fnmatch import fnmatchcase

from ._usage import TOKEN_CLASSES

#: Rates that are not per 1M tokens (`standby_per_minute`: a Live session's paused time).
UNIT_RATES: tuple[str, ...] = (
    "per_second", "per_minute", "per_1k_chars", "per_image", "standby_per_minute")

#: Rates per 1M tokens of a *part* of a class: prompt-cache writes, part of `input`.
PART_RATES: tuple[str, ...] = ("cache_write", "cache_write_12h")

#: Every rate key a price (or a config override) may carry.
RATE_KEYS: tuple[str, ...] = TOKEN_CLASSES + PART_RATES + UNIT_RATES

#: `confidence` of a period whose figures no source confirms (or sources dispute).
UNCONFIRMED = "unconfirmed"

#: Service tiers a period may price on its own (`default` is the base rates).
TIERS: tuple[str, ...] = ("priority", "ultrafast", "flex", "batch", "scale")

#: Other names a response may give a tier ("fast" is priority's name since 2026-07-30).
TIER_ALIASES = {"fast": "priority"}

#: Spellings of the standard tier in responses (`auto` is a request setting).
DEFAULT_TIERS = frozenset({"default", "standard", "auto", ""})

#: The `source` of a period that comes from `[pricing.models]` in the config.
OVERRIDE_SOURCE = "config"


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

    `rates` maps token classes (and the cache-write parts) to USD per 1M
    tokens and `per_second`, `per_minute`, `per_1k_chars`, `per_image`,
    `standby_per_minute` to USD per unit; a class that is absent has no own
    rate. `per_image_variants` maps "quality:size" or "size" to USD per image
    (the first listed variant of a size is its default).

    `context_window` and `max_output_tokens` are the model's published limits
    in tokens (None: not listed), for reservations and plausibility bounds.
    `confidence` is "unconfirmed" when no source confirms the figures (or
    sources disagree): charges priced from such a period carry the flag
    `price_unconfirmed`.
    """

    family: str
    rates: dict[str, Decimal]
    per_image_variants: dict[str, Decimal] = field(default_factory=dict)
    effective: date | None = None  # None: always in force (config overrides)
    source: str = ""
    tiers: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # tier -> own rates
    long_context: LongContext | None = None
    tier_sources: dict[str, str] = field(default_factory=dict)  # tier -> its own source
    context_window: int | None = None
    max_output_tokens: int | None = None
    confidence: str = ""  # "" (sourced) or UNCONFIRMED

    @property
    def unconfirmed(self) -> bool:
        return self.confidence == UNCONFIRMED

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
