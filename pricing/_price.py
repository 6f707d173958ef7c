"""`price(usage, model, at, table)`: one call's exact cost, class by class.

cost = Σ tokens(class) × rate(class) / 1,000,000
     + seconds × per_second + seconds / 60 × per_minute
     + characters / 1000 × per_1k_chars + images × per_image(size, quality)

Everything is Decimal; token, character and image parts are exact (the
per-minute part divides by 60 and is exact to 40 significant digits).

A class with usage but no rate of its own is billed at its base class's rate,
so usage is never silently free: cached_input → input,
cached_audio_input → audio_input → input, cached_image_input → image_input →
input, audio_input/image_input → input, audio_output/image_output → output.
If even that is missing the part is unbilled and the charge's usage carries
the flag `rate_missing`. A cached class's *savings* are its tokens times the
difference between its uncached class's rate and its own. Seconds, characters and images without a rate are
informational (not flagged) when the call also billed tokens: a token-billed
image or speech model reports its image count / characters too.

Prompt-cache writes are a part of `input` billed at their own rates, as the
breakdown classes `cache_write` (30-minute retention) and `cache_write_12h`
(12-hour): input = (input − writes) × input rate + writes × write rate. A
model without write rates bills them as plain input (older models charge
nothing extra for writing the cache). Likewise a Live session's
`standby_seconds` are a part of `seconds` billed at `standby_per_minute`
(breakdown class `standby_seconds`); without that rate they are billed as
active time.

Service tier: the tier the upstream *applied* (`usage.service_tier`) selects
the period's tier rates (`priority`, `flex`, `batch`, `scale`), class by
class over the base rates; a model without its own rates for the tier takes
the table's `[tier_factors]` factor of its base rates (Batch: half). A tier
priced neither way is billed at the base rates and flagged `tier_unpriced`.

Long context: when the prompt (all input classes) is above the period's
`long_context.above`, every class is billed at its rate times its factor.

Built-in tools: each `(fee key, count)` in `usage.tool_calls` is billed from
the table's `[tools]` fees in force at `at`, as its own breakdown class
`tool:<name>` ("web_search", "code_interpreter:4g" -> `tool:code_interpreter`).

Snapshots: a dated model name the table does not list for its family is
priced at the family's rates and flagged `priced_by_family`.

Unconfirmed prices: a charge priced from a period marked `confidence =
"unconfirmed"` is flagged `price_unconfirmed`, so reports can say how much
money rests on figures no source confirms.

`price_version` names the table, the period and the rule used:
`<table version>:<family>@<effective>[:<tier>][:long_context]`.

The usage is re-checked first (`_sane`): negative or absurd counts (e.g.
from a hand-built `Usage`) are clamped and flagged `usage_malformed`, so a
charge is never negative.
"""

from __future__ import annotations

import dataclasses
import decimal
import operator
from datetime import datetime
from decimal import Decimal

from ._charge import Charge
from ._period import Price
from ._sane import plainly_sane, sane
from ._table import PriceTable
from ._usage import INPUT_CLASSES, TOKEN_CLASSES, Usage, token_counts

RATE_MISSING = "rate_missing"
TIER_UNPRICED = "tier_unpriced"
BY_FAMILY = "priced_by_family"
UNCONFIRMED_PRICE = "price_unconfirmed"

#: Where a class without its own rate takes one from, nearest first.
FALLBACK: dict[str, tuple[str, ...]] = {
    "input": (),
    "output": (),
    "cached_input": ("input",),
    "audio_input": ("input",),
    "cached_audio_input": ("audio_input", "input"),
    "audio_output": ("output",),
    "image_input": ("input",),
    "cached_image_input": ("image_input", "input"),
    "image_output": ("output",),
    "cache_write": ("input",),
    "cache_write_12h": ("input",),
}

#: The cache-write parts of `input`: (Usage field, breakdown class and rate key).
WRITE_PARTS: tuple[str, ...] = ("cache_write", "cache_write_12h")

_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_CONTEXT = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


def price(usage: Usage, model: str, at: datetime | None, table: PriceTable) -> Charge:
    """The charge for `usage` of `model` at time `at` (UTC; None: now) under `table`.

    `table` is the table in force (the shipped one with the config's
    overrides): there is no default, so no caller can price against the
    wrong rates by leaving it out. An unknown model gives
    `Charge(priced=False, cost=0, family=None)`; the call is still recorded.
    """
    usage = sane(usage)
    entry = table.entry(model, at)
    if entry is None:
        return Charge(
            model=model,
            family=None,
            usage=usage,
            cost=_ZERO,
            breakdown={},
            price_version=table.version,
            priced=False,
        )
    rates, tier, tier_priced = table.rates_for(entry, usage.service_tier)
    flags: list[str] = []
    version = f"{table.version}:{entry.version}"
    if tier is not None:
        if tier_priced:
            version += f":{tier}"
        else:
            flags.append(TIER_UNPRICED)
    rates, long = _long_context(usage, rates)
    if long:
        version += ":long_context"
    breakdown, missing = _breakdown(usage, rates)
    missing = _tool_fees(usage, entry.family, table, at, breakdown) or missing
    if missing:
        flags.append(RATE_MISSING)
    if table.by_family(model, entry.family):
        flags.append(BY_FAMILY)
    if entry.unconfirmed:
        flags.append(UNCONFIRMED_PRICE)
    new = tuple(f for f in flags if f not in usage.flags)
    if new:
        usage = dataclasses.replace(usage, flags=usage.flags + new)
    with decimal.localcontext(_CONTEXT):
        cost = sum(breakdown.values(), _ZERO)
        savings = _savings(usage, rates)
    return Charge(
        model=model,
        family=entry.family,
        usage=usage,
        cost=cost,
        breakdown=breakdown,
        price_version=version,
        priced=True,
        savings=savings,
    )


def cost_of(usage: Usage, model: str, at: datetime | None, table: PriceTable) -> Decimal:
    """`price(usage, model, at, table).cost`, without the charge around it.

    For reservations, which need only the amount: no flags, version, savings
    or `Charge`. Usage with a service tier or tool calls takes `price()`.
    """
    entry = table.entry(model, at)
    if entry is None:
        return _ZERO
    if _tokens_only(usage, entry):  # the reservation's shape: per-token rates, memoised
        rates = table.per_token(entry, TOKEN_CLASSES, rate_for)
        with decimal.localcontext(_CONTEXT):
            return sum((n * r for n, r in zip(token_counts(usage), rates) if n), _ZERO)
    usage = sane(usage)
    if usage.service_tier is not None or usage.tool_calls:
        return price(usage, model, at, table).cost
    rates, _ = _long_context(usage, entry)
    breakdown, _ = _breakdown(usage, rates)
    with decimal.localcontext(_CONTEXT):
        return sum(breakdown.values(), _ZERO)


def _tokens_only(usage: Usage, entry: Price) -> bool:
    """Plain token counts, sane, below any long-context threshold, nothing else."""
    if (not plainly_sane(usage) or usage.seconds or usage.characters or usage.images
            or usage.service_tier is not None or usage.cache_write or usage.cache_write_12h):
        return False
    rule = entry.long_context
    return rule is None or prompt_tokens(usage) <= rule.above


_input_counts = operator.attrgetter(*INPUT_CLASSES)


def prompt_tokens(usage: Usage) -> int:
    """All input classes together: what a long-context threshold compares."""
    return sum(_input_counts(usage))


def _long_context(usage: Usage, entry: Price) -> tuple[Price, bool]:
    rule = entry.long_context
    if rule is None or prompt_tokens(usage) <= rule.above:
        return entry, False
    scaled = {}
    for name, rate in entry.rates.items():
        factor = rule.factors.get(name)
        for base in FALLBACK.get(name, ()):
            if factor is not None:
                break
            factor = rule.factors.get(base)
        scaled[name] = rate * factor if factor is not None else rate
    return dataclasses.replace(entry, rates=scaled), True


def _tool_fees(usage: Usage, family: str, table: PriceTable, at: datetime | None,
               parts: dict[str, Decimal]) -> bool:
    """Add `tool:<name>` parts for the usage's tool calls; True if a fee is missing."""
    missing = False
    for key, n in usage.tool_calls:
        name, _, variant = key.partition(":")
        fee = table.tool(name, at)
        rate = fee.rate(variant or None, family) if fee is not None else None
        if rate is None:
            missing = True
            continue
        part = "tool:" + name
        parts[part] = parts.get(part, _ZERO) + Decimal(n) * rate
    return missing


def rate_for(entry: Price, token_class: str) -> Decimal | None:
    """The rate a token class is billed at, after fallbacks (None: no rate)."""
    rate = entry.rate(token_class)
    if rate is not None:
        return rate
    for other in FALLBACK.get(token_class, ()):
        rate = entry.rate(other)
        if rate is not None:
            return rate
    return None


#: Cached classes and the class they would have been billed as without the cache.
UNCACHED: dict[str, str] = {
    "cached_input": "input",
    "cached_audio_input": "audio_input",
    "cached_image_input": "image_input",
}


def _savings(usage: Usage, entry: Price) -> Decimal:
    """What the cached tokens saved against the uncached price (never negative)."""
    total = _ZERO
    for cached, full in UNCACHED.items():
        n = getattr(usage, cached)
        if n <= 0:
            continue
        full_rate, cached_rate = rate_for(entry, full), rate_for(entry, cached)
        if full_rate is not None and cached_rate is not None and full_rate > cached_rate:
            total += Decimal(n) * (full_rate - cached_rate) / _MILLION
    return total


def _breakdown(usage: Usage, entry: Price) -> tuple[dict[str, Decimal], bool]:
    parts: dict[str, Decimal] = {}
    with decimal.localcontext(_CONTEXT):
        missing = _token_parts(usage, entry, parts)
        missing = _unit_parts(usage, entry, parts, tokens_billed=bool(parts)) or missing
    return parts, missing


def _token_parts(usage: Usage, entry: Price, parts: dict[str, Decimal]) -> bool:
    """Each token class (and cache-write part) at its rate; True if one had none."""
    missing = False
    written = usage.cache_write + usage.cache_write_12h
    counts = [(name, n - written if name == "input" else n)  # writes: at their own rates
              for name, n in zip(TOKEN_CLASSES, token_counts(usage))]
    counts += [(name, getattr(usage, name)) for name in WRITE_PARTS]
    for name, n in counts:
        if n <= 0:
            continue
        rate = rate_for(entry, name)
        if rate is None:
            missing = True
            continue
        parts[name] = Decimal(n) * rate / _MILLION
    return missing


def _unit_parts(usage: Usage, entry: Price, parts: dict[str, Decimal],
                tokens_billed: bool) -> bool:
    """Seconds, characters and images at their unit rates; True if one had none."""
    missing = False
    if usage.seconds > 0:
        per_second, per_minute = entry.rate("per_second"), entry.rate("per_minute")
        if per_second is None and per_minute is None:
            missing = missing or not tokens_billed
        else:
            standby_rate = entry.rate("standby_per_minute")
            standby = usage.standby_seconds if standby_rate is not None else _ZERO
            active = usage.seconds - standby
            amount = _ZERO
            if per_second is not None:
                amount += active * per_second
            if per_minute is not None:
                amount += active * per_minute / 60
            parts["seconds"] = amount
            if standby > 0:
                parts["standby_seconds"] = standby * standby_rate / 60

    if usage.characters > 0:
        per_1k = entry.rate("per_1k_chars")
        if per_1k is None:
            missing = missing or not tokens_billed
        else:
            parts["characters"] = Decimal(usage.characters) * per_1k / 1000

    if usage.images > 0:
        per_image = entry.image_rate(usage.image_size, usage.image_quality)
        if per_image is None:
            missing = missing or not tokens_billed
        else:
            parts["images"] = Decimal(usage.images) * per_image
    return missing
