"""`faregate prices --compare FILE`: faregate's table against a community one, by data.

The community table is a LiteLLM-format `model_prices_and_context_window.json`:
one object per model name with per-token costs (`input_cost_per_token`,
`cache_read_input_token_cost`, ...), tier variants by suffix (`_priority`,
`_flex`, `_batches`, `_ultrafast`), long-context variants
(`_above_272k_tokens`) and unit costs (`input_cost_per_second`,
`input_cost_per_character`, `output_cost_per_video_per_second`). Only its
numbers are read, as facts to compare: nothing of it is loaded into pricing.

For every OpenAI entry (`litellm_provider` openai / text-completion-openai)
each figure is set beside the rate faregate would bill for the same class,
tier and context length on the comparison day, and every difference is
listed with faregate's source for its own figure and, when the table
documents one (`[differences]`), the reason. An entry that prices anything
while its name resolves to no price here is *missing*. Figures faregate has
no class for (per-size image estimates, audio cache writes, per-second
speech estimates) are listed as such, not silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from ._period import Price
from ._price import FALLBACK, rate_for
from ._table import PriceTable

PROVIDERS = frozenset({"openai", "text-completion-openai"})

#: LiteLLM per-token cost key (suffixes stripped) -> faregate class or part.
TOKEN_KEYS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_12hr": "cache_write_12h",
    "input_cost_per_audio_token": "audio_input",
    "cache_read_input_audio_token_cost": "cached_audio_input",
    "output_cost_per_audio_token": "audio_output",
    "input_cost_per_image_token": "image_input",
    "cache_read_input_image_token_cost": "cached_image_input",
    "output_cost_per_image_token": "image_output",
}
#: LiteLLM unit cost key -> (faregate rate key, factor from their unit to ours).
UNIT_KEYS = {
    "input_cost_per_second": ("per_second", Decimal(1)),
    "output_cost_per_video_per_second": ("per_second", Decimal(1)),
    "input_cost_per_character": ("per_1k_chars", Decimal(1000)),
}
#: Cost keys faregate has no rate for, and why.
UNMODELLED = {
    "cache_creation_input_audio_token_cost": "no audio cache-write class (Realtime reports none)",
    "output_cost_per_second": "a per-second output estimate: speech is priced per token or "
                              "character, transcription by its input audio",
    "input_cost_per_image": "a per-size estimate for a token-billed image model",
    "input_cost_per_pixel": "dall-e is priced per image by size",
    "output_cost_per_pixel": "dall-e is priced per image by size",
}
TIER_SUFFIXES = {"_batches": "batch", "_flex": "flex", "_priority": "priority",
                 "_ultrafast": "ultrafast", "_decisions": "decisions"}
_LONG = re.compile(r"_above_(\d+)k_tokens$")
MILLION = Decimal(1_000_000)
#: Figures this close (relative) are the same price written differently (float noise,
#: a per-second rate rounded from a per-minute one).
TOLERANCE = Decimal("1e-6")
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Difference:
    model: str
    rate: str  # faregate class or rate key
    tier: str  # "standard", "priority", ...
    long_context: int | None  # the threshold, when the figure is a long-context one
    ours: Decimal | None  # None: faregate has no rate for it
    theirs: Decimal
    source: str  # faregate's source for its figure
    why: str = ""  # the documented reason, or what faregate does instead
    documented: bool = False  # `why` comes from the table's [differences]

    def line(self) -> str:
        where = self.tier + (f", above {self.long_context // 1000}K" if self.long_context else "")
        ours = _fmt(self.ours) if self.ours is not None else "-"
        text = (f"{self.model}  {self.rate} [{where}]: faregate {ours} vs community "
                f"{_fmt(self.theirs)}")
        if self.source:
            text += f"  (faregate: {self.source})"
        return text + (f"  -- {self.why}" if self.why else "")


@dataclass
class Comparison:
    entries: int = 0  # OpenAI entries read
    priced: int = 0  # of which price something
    skipped: list[str] = field(default_factory=list)  # size/quality variants, provider aliases
    differences: list[Difference] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    by_family: list[str] = field(default_factory=list)  # priced here at a family's rates

    def lines(self) -> list[str]:
        out = [d.line() for d in self.differences]
        out += [f"{m}  MISSING: the community table prices it, faregate has no price"
                for m in self.missing]
        models = len({d.model for d in self.differences})
        documented = sum(1 for d in self.differences if d.documented)
        explained = sum(1 for d in self.differences if d.why and not d.documented)
        out.append(
            f"{self.entries} OpenAI entries ({self.priced} priced), {len(self.skipped)} "
            f"size/quality variants skipped; {len(self.differences)} differences in {models} "
            f"models ({documented} documented, {explained} where faregate bills it another "
            f"way, {len(self.differences) - documented - explained} unexplained); "
            f"{len(self.missing)} missing; {len(self.by_family)} priced at their family's rates")
        return out


def compare(community: Any, table: PriceTable, at: datetime | None = None) -> Comparison:
    """Every difference between `community` (parsed LiteLLM JSON) and `table` at `at`."""
    if not isinstance(community, Mapping):
        raise ValueError("expected a JSON object of model entries")
    result = Comparison()
    for name, entry in list(community.items())[:MAX_ENTRIES]:
        if not isinstance(entry, Mapping) or entry.get("litellm_provider") not in PROVIDERS:
            continue
        result.entries += 1
        name = str(name)[:256]
        if "/" in name:
            result.skipped.append(name)
            continue
        figures = _figures(entry)
        if any(v > 0 for *_, v in figures):
            result.priced += 1
        _compare_one(name, figures, table, at, result)
    return result


def _compare_one(name: str, figures: list[tuple[str, str, int | None, Decimal]],
                 table: PriceTable, at: datetime | None, result: Comparison) -> None:
    ours = table.entry(name, at)
    if ours is None:
        if any(v > 0 for *_, v in figures):
            result.missing.append(name)
        return
    if table.by_family(name, ours.family):
        result.by_family.append(name)
    why = table.differences.get(name.strip().lower()) or table.differences.get(ours.family, "")
    for key, tier, long, theirs in figures:
        mine, source, note = our_figure(table, ours, key, tier, long)
        if mine is not None and _same(mine, theirs):
            continue
        if mine is None and theirs == 0:
            continue
        result.differences.append(Difference(
            name, key, tier, long, mine, theirs, source, why or note, bool(why)))


def _figures(entry: Mapping[str, Any]) -> list[tuple[str, str, int | None, Decimal]]:
    """(faregate rate key, tier, long-context threshold, USD per our unit) per cost field."""
    out = []
    for raw_key, value in entry.items():
        amount = _decimal(value)
        if amount is None or not isinstance(raw_key, str):
            continue
        key, tier, long = _split(raw_key)
        if key in TOKEN_KEYS:
            out.append((TOKEN_KEYS[key], tier, long, amount * MILLION))
        elif key in UNIT_KEYS:
            rate, factor = UNIT_KEYS[key]
            out.append((rate, tier, long, amount * factor))
        elif key in UNMODELLED:
            out.append((key, tier, long, amount))
    return sorted(out, key=lambda f: (f[1] != "standard", f[1], f[2] or 0, f[0]))


def _split(key: str) -> tuple[str, str, int | None]:
    tier = "standard"
    for suffix, name in TIER_SUFFIXES.items():
        if key.endswith(suffix):
            key, tier = key[: -len(suffix)], name
            break
    long = None
    m = _LONG.search(key)
    if m:
        long, key = int(m.group(1)) * 1000, key[: m.start()]
    return key, tier, long


def our_figure(table: PriceTable, entry: Price, key: str, tier: str, long: int | None
               ) -> tuple[Decimal | None, str, str]:
    """(the rate faregate bills, its source, a note when it has none) for one figure."""
    if key in UNMODELLED:
        return None, "", UNMODELLED[key]
    if tier == "decisions":
        return None, "", "Live decisions are billed as the delegated model's own calls"
    rates, tier_name, priced = table.rates_for(entry, None if tier == "standard" else tier)
    if not priced:
        return None, "", f"no {tier} rates: billed at standard rates, flagged tier_unpriced"
    if tier_name is None:
        source = entry.source
    elif tier_name in entry.tiers:
        source = entry.tier_sources.get(tier_name) or entry.source
    else:
        source = table.tier_factors[tier_name][1]
    rate = _unit_rate(rates, key) if key in ("per_second", "per_1k_chars") else rate_for(rates, key)
    if rate is None:
        return None, source, "no rate for this class here"
    if long is not None:
        rule = entry.long_context
        if rule is None or rule.above != long:
            return None, source, f"no long-context rule above {long // 1000}K here"
        rate = rate * _factor(rule.factors, key)
        source = rule.source or source
    return rate, source, ""


def _unit_rate(rates: Price, key: str) -> Decimal | None:
    if key == "per_second" and rates.rate("per_second") is None:
        per_minute = rates.rate("per_minute")
        return per_minute / 60 if per_minute is not None else None
    return rates.rate(key)


def _factor(factors: Mapping[str, Decimal], key: str) -> Decimal:
    if key in factors:
        return factors[key]
    for base in FALLBACK.get(key, ()):
        if base in factors:
            return factors[base]
    return Decimal(1)


def _same(a: Decimal, b: Decimal) -> bool:
    if a == b:
        return True
    return abs(a - b) <= TOLERANCE * max(abs(a), abs(b))


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        amount = Decimal(repr(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _fmt(value: Decimal) -> str:
    v = value.normalize()
    if v == v.to_integral_value():
        return format(v.quantize(Decimal("0.01")), "f")
    return format(v, "f")
