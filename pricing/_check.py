"""`faregate prices --check`: is the price table complete and unambiguous?

Parsing already rejects malformed data (unknown rates, negative amounts, bad
dates). The check looks at the table as a whole: every period and tool fee
says where its numbers come from, no two periods of a family start on the
same day (which one would be in force?), listed snapshots resolve to the
family that lists them, a tier or long-context rule only names classes
the period prices, a period that prices cache writes prices both retentions
and every own tier rate set carries them too (else a tier would bill writes
at the standard rate), and every retired name resolves to a price (old
records must still price).

`unconfirmed_periods` lists the periods marked `confidence =
"unconfirmed"`: not problems, but figures a person should confirm.
"""

from __future__ import annotations

from ._price import FALLBACK, WRITE_PARTS
from ._period import OVERRIDE_SOURCE, Price
from ._table import PriceTable


def check_price_table(table: PriceTable) -> list[str]:
    """Problems found, one line each with its table path; empty when sound."""
    problems: list[str] = []
    for family, periods in table.periods.items():
        problems += _periods(f"models.{family}", periods)
        for p in periods:
            where = f"models.{family}[{p.effective or 'config'}]"
            if not p.rates and not p.per_image_variants:
                problems.append(f"{where}: no rates")
            for tier, rates in p.tiers.items():
                for cls in rates:
                    if cls not in p.rates and not any(b in p.rates for b in FALLBACK.get(cls, ())):
                        problems.append(f"{where}.{tier}.{cls}: the base period has no such class")
            if p.long_context is not None:
                for cls in p.long_context.factors:
                    if cls not in p.rates and not any(b in p.rates for b in FALLBACK.get(cls, ())):
                        problems.append(f"{where}.long_context.{cls}: not a class of this period")
            problems += _cache_writes(where, p)
    for name in sorted(table.retired):
        if table.resolve(name) is None:
            problems.append(f"retired.{name}: no price (old records of it would be unpriced)")
    for family, names in table.snapshots.items():
        for name in sorted(names):
            resolved = table.resolve(name)
            if resolved != family:
                problems.append(f"snapshots.{family}: {name!r} resolves to {resolved!r}")
    for name, tool_periods in table.tools.items():
        problems += _periods(f"tools.{name}", tool_periods)
    return problems


def _cache_writes(where: str, p: Price) -> list[str]:
    """Both retentions or neither; own tier input rates come with their write rates."""
    given = [w for w in WRITE_PARTS if w in p.rates]
    if not given:
        return []
    problems = [f"{where}.{w}: missing (the period prices {given[0]})"
                for w in WRITE_PARTS if w not in p.rates]
    for tier, rates in p.tiers.items():
        if "input" in rates:
            problems += [f"{where}.{tier}.{w}: missing (the tier has its own input rate)"
                         for w in WRITE_PARTS if w not in rates]
    return problems


def unconfirmed_periods(table: PriceTable) -> list[str]:
    """One line per period marked unconfirmed: its path and source."""
    return [f"models.{family}[{p.effective or 'config'}]: unconfirmed ({p.source or 'no source'})"
            for family, periods in sorted(table.periods.items()) for p in periods
            if p.unconfirmed]


def _periods(path: str, periods) -> list[str]:
    """Every period says where its numbers come from; no two start on the same day."""
    problems, seen = [], set()
    for p in periods:
        where = f"{path}[{p.effective or 'config'}]"
        if p.effective in seen:
            problems.append(f"{where}: two periods start on the same day")
        seen.add(p.effective)
        if not p.source.strip():
            problems.append(f"{where}.source: missing (where do these rates come from?)")
    return problems


def describe(table: PriceTable) -> str:
    """One line: what the table holds."""
    periods = sum(len(p) for p in table.periods.values())
    tiers = sum(len(p.tiers) for ps in table.periods.values() for p in ps)
    overrides = sum(1 for ps in table.periods.values() for p in ps if p.source == OVERRIDE_SOURCE)
    unconfirmed = sum(1 for ps in table.periods.values() for p in ps if p.unconfirmed)
    return (f"price table {table.version}: {len(table.periods)} models, {periods} price periods, "
            f"{tiers} tier price sets, {len(table.tools)} tool fees, "
            f"{sum(len(s) for s in table.snapshots.values())} known snapshots, "
            f"{len(table.retired)} retired, {unconfirmed} unconfirmed, "
            f"{overrides} config overrides")
